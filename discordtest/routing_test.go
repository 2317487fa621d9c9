package discordtest

import (
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/bwmarrin/discordgo"
)

// Each discordgo shard gets READY with exactly its guilds, then one
// GUILD_CREATE per guild routed to it by (guild_id >> 22) % count.
func TestShardsGetTheirGuilds(t *testing.T) {
	t.Parallel()
	const shards = 3
	srv := newTestServer(t, Options{Guilds: 14, Shards: shards, MaxConcurrency: shards, IdentifyInterval: 1})
	var (
		mu    sync.Mutex
		got   = map[int][]string{}
		ready = map[int]*discordgo.Ready{}
	)
	sig := newSignal()
	var bots []*discordgo.Session
	for shard := range shards {
		b := newBot(t, srv, shard, shards)
		b.AddHandler(func(_ *discordgo.Session, r *discordgo.Ready) {
			mu.Lock()
			ready[shard] = r
			mu.Unlock()
			sig.notify()
		})
		b.AddHandler(func(_ *discordgo.Session, g *discordgo.GuildCreate) {
			mu.Lock()
			got[shard] = append(got[shard], g.ID)
			mu.Unlock()
			sig.notify()
		})
		bots = append(bots, b)
	}
	for _, b := range bots {
		if err := b.Open(); err != nil {
			t.Fatalf("open: %v", err)
		}
	}
	waitClient(t, sig, "every guild created", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ids := range got {
			n += len(ids)
		}
		return n == 14 && len(ready) == shards
	})
	seen := map[string]bool{}
	mu.Lock()
	defer mu.Unlock()
	for shard := range shards {
		want := srv.GuildIDsOf(shard, shards)
		ids := slices.Sorted(slices.Values(got[shard]))
		if !slices.Equal(ids, slices.Sorted(slices.Values(want))) {
			t.Errorf("shard %d got guilds %v, want %v", shard, ids, want)
		}
		for _, id := range ids {
			n, _ := strconv.ParseUint(id, 10, 64)
			if int((n>>22)%shards) != shard {
				t.Errorf("guild %s on shard %d: routes to %d", id, shard, (n>>22)%shards)
			}
			if seen[id] {
				t.Errorf("guild %s sent twice", id)
			}
			seen[id] = true
		}
		r := ready[shard]
		if r.SessionID == "" || r.User == nil || !r.User.Bot || r.Shard == nil || *r.Shard != [2]int{shard, shards} ||
			r.Application == nil || r.Application.ID != srv.ApplicationID() || len(r.Guilds) != len(want) {
			b, _ := json.Marshal(r)
			t.Errorf("shard %d READY incomplete: %s", shard, b)
		}
		if len(want) < 4 || len(want) > 5 {
			t.Errorf("shard %d has %d of 14 guilds: not spread evenly", shard, len(want))
		}
	}
	mu.Unlock()
	closeBots(bots...)
	mu.Lock()
}
