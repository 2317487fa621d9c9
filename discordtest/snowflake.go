package discordtest

import (
	"crypto/rand"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/bwmarrin/discordgo"
)

// Snowflakes. A snowflake's top 42 bits are milliseconds since the Discord
// epoch (2015-01-01); Discord routes a guild to shard
// (guild_id >> 22) % shard_count.
//
// Guild k gets the timestamp guildBase+k and zero low bits. guildBase is a
// multiple of lcm(1..16) = 720720, so guild k lands on shard k % n for every
// n that divides 720720 (1-16, 18, 20, 24, ...), and guilds spread evenly
// (round robin) for any n. The timestamp is early 2024.
const (
	guildBase        = 720720 * 400000
	maxGuilds        = 10_000_000
	userBase         = guildBase - 2*maxGuilds             // generated members' user ids
	idBase           = uint64(guildBase+2*maxGuilds) << 22 // everything else
	maxGuildChildren = 1<<22 - 2                           // channels and roles live in a guild's low bits
	snowflakeShift   = 22
)

// guildID is the id of guild k.
func guildID(k int) uint64 { return uint64(guildBase+k) << snowflakeShift }

// guildIndex returns k for a guild id of this fake, or false.
func guildIndex(id string, guilds int) (int, bool) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n&(1<<snowflakeShift-1) != 0 {
		return 0, false
	}
	k := int64(n>>snowflakeShift) - guildBase
	if k < 0 || k >= int64(guilds) {
		return 0, false
	}
	return int(k), true
}

// routeShard is Discord's routing of a guild to a shard.
func routeShard(guild uint64, count int) int {
	return int((guild >> snowflakeShift) % uint64(count))
}

// shardGuilds returns the first guild index routed to shard of count and
// how many guilds are routed there; they are first, first+count, ...
func shardGuilds(guilds, shard, count int) (first, n int) {
	if count < 1 || shard < 0 || shard >= count {
		return 0, 0
	}
	first = ((shard-guildBase%count)%count + count) % count
	if first >= guilds {
		return first, 0
	}
	return first, (guilds-first-1)/count + 1
}

func guildCount(guilds, shard, count int) int {
	_, n := shardGuilds(guilds, shard, count)
	return n
}

// guildsOf lists the guild indexes routed to shard of count, in order.
func guildsOf(guilds, shard, count int) []int {
	first, n := shardGuilds(guilds, shard, count)
	ks := make([]int, n)
	for i := range ks {
		ks[i] = first + i*count
	}
	return ks
}

// channelID and roleID are ids inside guild k: its low bits. The @everyone
// role has the guild's id, as on Discord.
func channelID(k, j int) uint64 { return guildID(k) + 1 + uint64(j) }
func roleID(k, j, channels int) uint64 {
	if j == 0 {
		return guildID(k)
	}
	return guildID(k) + 1 + uint64(channels) + uint64(j)
}

// extraID is the id of the n-th thread, emoji or sticker of guild k: after
// its channels and roles.
func extraID(k, n, channels, roles int) uint64 {
	return guildID(k) + 1 + uint64(channels) + uint64(roles) + uint64(n)
}

// userID is the id of generated user j; the same users are members of
// every guild.
func userID(j int) uint64 { return uint64(userBase)<<snowflakeShift + uint64(j) }

// idGen hands out fresh snowflakes (messages, interactions, commands).
type idGen struct{ n atomic.Uint64 }

func (g *idGen) next() string { return strconv.FormatUint(idBase+g.n.Add(1), 10) }

// randomToken returns an unguessable token of 26 lower-case characters.
func randomToken() string { return strings.ToLower(rand.Text()) }

// Intents.
const (
	privilegedIntents = discordgo.IntentGuildMembers | discordgo.IntentGuildPresences | discordgo.IntentMessageContent
	// knownIntents are the intents Discord documents (bits 0-16, 20, 21,
	// 24, 25); any other bit closes with 4013.
	knownIntents = discordgo.Intent(1<<17-1) | 1<<20 | 1<<21 | 1<<24 | 1<<25
)
