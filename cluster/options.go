package cluster

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/internal/field"
)

// intentNames are the names -intents accepts, Discord's own in lower case.
var intentNames = []struct {
	name   string
	intent discordgo.Intent
}{
	{"guilds", discordgo.IntentGuilds},
	{"guild_members", discordgo.IntentGuildMembers},
	{"guild_moderation", discordgo.IntentGuildModeration},
	{"guild_emojis_and_stickers", discordgo.IntentGuildEmojis},
	{"guild_integrations", discordgo.IntentGuildIntegrations},
	{"guild_webhooks", discordgo.IntentGuildWebhooks},
	{"guild_invites", discordgo.IntentGuildInvites},
	{"guild_voice_states", discordgo.IntentGuildVoiceStates},
	{"guild_presences", discordgo.IntentGuildPresences},
	{"guild_messages", discordgo.IntentGuildMessages},
	{"guild_message_reactions", discordgo.IntentGuildMessageReactions},
	{"guild_message_typing", discordgo.IntentGuildMessageTyping},
	{"direct_messages", discordgo.IntentDirectMessages},
	{"direct_message_reactions", discordgo.IntentDirectMessageReactions},
	{"direct_message_typing", discordgo.IntentDirectMessageTyping},
	{"message_content", discordgo.IntentMessageContent},
	{"guild_scheduled_events", discordgo.IntentGuildScheduledEvents},
	{"auto_moderation_configuration", discordgo.IntentAutoModerationConfiguration},
	{"auto_moderation_execution", discordgo.IntentAutoModerationExecution},
	{"guild_message_polls", discordgo.IntentGuildMessagePolls},
	{"direct_message_polls", discordgo.IntentDirectMessagePolls},
}

// PrivilegedIntents must be enabled for the bot in the developer portal.
const PrivilegedIntents = discordgo.IntentGuildMembers | discordgo.IntentGuildPresences | discordgo.IntentMessageContent

// DefaultIntents is every intent that needs no approval.
const DefaultIntents = discordgo.IntentsAllWithoutPrivileged

// Fields of Config that the parsers here name in their *field.Error.
const (
	FieldIntents = "Config.Intents"
	FieldCache   = "Config.Cache"
)

// ParseIntents reads -intents: a number, or names joined by commas
// ("guilds,guild_messages"), where "default" stands for every
// non-privileged intent.
func ParseIntents(s string) (discordgo.Intent, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return discordgo.Intent(n), nil
	}
	var in discordgo.Intent
next:
	for part := range strings.SplitSeq(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		if part == "default" {
			in |= DefaultIntents
			continue
		}
		for _, n := range intentNames {
			if n.name == part {
				in |= n.intent
				continue next
			}
		}
		return 0, field.New(FieldIntents, fmt.Sprintf("%q: unknown intent %q (a number, or names such as guilds,guild_messages,message_content)", s, part))
	}
	return in, nil
}

// FormatIntents names the intents in in.
func FormatIntents(in discordgo.Intent) string {
	var names []string
	for _, n := range intentNames {
		if in&n.intent != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// Cache says what each shard's discordgo State keeps. Members and presences
// cost the most memory by far; messages are kept per channel.
type Cache struct {
	Channels, Threads, Emojis, Stickers, Members, ThreadMembers, Roles, Voice, Presences bool
	Messages                                                                             int
}

// DefaultCache is the -state-cache default: everything but members,
// presences and messages.
const DefaultCache = "channels,threads,roles,emojis,stickers,voice"

type cacheField struct {
	name string
	p    *bool
}

func (c *Cache) fields() []cacheField {
	return []cacheField{
		{"channels", &c.Channels}, {"threads", &c.Threads}, {"emojis", &c.Emojis}, {"stickers", &c.Stickers},
		{"members", &c.Members}, {"thread_members", &c.ThreadMembers}, {"roles", &c.Roles}, {"voice", &c.Voice},
		{"presences", &c.Presences},
	}
}

// ParseCache reads -state-cache: names joined by commas, "none", "all", and
// "messages=N" for N messages per channel.
func ParseCache(s string) (Cache, error) {
	var c Cache
	for part := range strings.SplitSeq(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		switch {
		case part == "none" || part == "":
		case part == "all":
			for _, f := range c.fields() {
				*f.p = true
			}
		case strings.HasPrefix(part, "messages="):
			n, err := strconv.Atoi(strings.TrimPrefix(part, "messages="))
			if err != nil || n < 0 {
				return Cache{}, field.New(FieldCache, fmt.Sprintf("%q: %q needs a count of messages per channel", s, part))
			}
			c.Messages = n
		default:
			i := slices.IndexFunc(c.fields(), func(f cacheField) bool { return f.name == part })
			if i < 0 {
				return Cache{}, field.New(FieldCache, fmt.Sprintf("%q: unknown cache %q (channels, threads, emojis, stickers, members, thread_members, roles, voice, presences, messages=N, all, none)", s, part))
			}
			*c.fields()[i].p = true
		}
	}
	return c, nil
}

func (c Cache) String() string {
	var names []string
	for _, f := range c.fields() {
		if *f.p {
			names = append(names, f.name)
		}
	}
	if c.Messages > 0 {
		names = append(names, "messages="+strconv.Itoa(c.Messages))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

func (c Cache) apply(st *discordgo.State) {
	st.TrackChannels, st.TrackThreads, st.TrackEmojis, st.TrackStickers = c.Channels, c.Threads, c.Emojis, c.Stickers
	st.TrackMembers, st.TrackThreadMembers, st.TrackRoles = c.Members, c.ThreadMembers, c.Roles
	st.TrackVoice, st.TrackPresences, st.MaxMessageCount = c.Voice, c.Presences, c.Messages
}
