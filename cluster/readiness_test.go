package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// readinessStep is one frame (or IDENTIFY) as the shard's handlers see it,
// and what readiness must say after it.
type readinessStep struct {
	op     string // identify, ready, create, delete, outage, timeout
	ids    []string
	gen    uint64 // timeout: the generation it was armed for
	done   bool   // the step made the shard ready
	wait   bool   // still waiting for guilds after the step
	guilds int
}

func TestReadinessInFrameOrder(t *testing.T) {
	ids := func(s ...string) []string { return s }
	cases := []struct {
		name  string
		steps []readinessStep
	}{
		{"guilds after READY", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "create", ids: ids("a"), wait: true, guilds: 2},
			{op: "create", ids: ids("b"), done: true, guilds: 2},
		}},
		{"no guilds in READY", []readinessStep{
			{op: "identify"},
			{op: "ready", done: true},
			{op: "create", ids: ids("c"), guilds: 1}, // joined later
		}},
		// Issue 16: op 9 in the middle of the burst; the new session's
		// guilds count for its own READY only.
		{"op 9 during the guilds, same guilds", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b", "c"), wait: true, guilds: 3},
			{op: "create", ids: ids("a"), wait: true, guilds: 3},
			{op: "identify", guilds: 3},
			{op: "ready", ids: ids("a", "b", "c"), wait: true, guilds: 3},
			{op: "create", ids: ids("a"), wait: true, guilds: 3},
			{op: "create", ids: ids("b"), wait: true, guilds: 3},
			{op: "create", ids: ids("c"), done: true, guilds: 3},
		}},
		{"op 9 before any guild, twice", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "identify", guilds: 2},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "identify", guilds: 2},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "create", ids: ids("b"), wait: true, guilds: 2},
			{op: "create", ids: ids("a"), done: true, guilds: 2},
		}},
		{"the new READY lists other guilds", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "create", ids: ids("a"), wait: true, guilds: 2},
			{op: "identify", guilds: 2},
			{op: "ready", ids: ids("b", "c"), wait: true, guilds: 2},
			{op: "create", ids: ids("b"), wait: true, guilds: 2},
			{op: "create", ids: ids("c"), done: true, guilds: 2},
		}},
		// The timeout of a READY after an IDENTIFY or a later READY is stale.
		{"stale timeout while identifying", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a"), wait: true, guilds: 1},
			{op: "identify", guilds: 1},
			{op: "timeout", gen: 2, guilds: 1},
		}},
		{"stale timeout after the next READY", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "identify", guilds: 2},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "timeout", gen: 2, wait: true, guilds: 2},
			{op: "timeout", gen: 4, done: true, guilds: 2},
			{op: "create", ids: ids("a"), guilds: 2},
		}},
		{"timeout after the guilds came", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a"), wait: true, guilds: 1},
			{op: "create", ids: ids("a"), done: true, guilds: 1},
			{op: "timeout", gen: 2, guilds: 1},
		}},
		// GUILD_DELETE of a guild READY listed: no GUILD_CREATE will come.
		{"removed during the wait", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "create", ids: ids("a"), wait: true, guilds: 2},
			{op: "delete", ids: ids("b"), done: true, guilds: 1},
		}},
		{"outage during the wait, then back", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "outage", ids: ids("b"), wait: true, guilds: 2},
			{op: "create", ids: ids("a"), done: true, guilds: 2},
			{op: "create", ids: ids("b"), guilds: 2},
		}},
		{"outage and removal when ready", []readinessStep{
			{op: "identify"},
			{op: "ready", ids: ids("a", "b"), wait: true, guilds: 2},
			{op: "create", ids: ids("a"), wait: true, guilds: 2},
			{op: "create", ids: ids("b"), done: true, guilds: 2},
			{op: "outage", ids: ids("a"), guilds: 2},
			{op: "delete", ids: ids("b"), guilds: 1},
			{op: "create", ids: ids("b"), guilds: 2}, // added back
			{op: "delete", ids: ids("x"), guilds: 2}, // never had it
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r readiness
			for i, st := range tc.steps {
				var done bool
				switch st.op {
				case "identify":
					r.identify()
				case "ready":
					done, _ = r.ready(st.ids)
				case "create":
					done = r.guildCreate(st.ids[0])
				case "delete", "outage":
					done = r.guildDelete(st.ids[0], st.op == "outage")
				case "timeout":
					_, done = r.timeout(st.gen)
				}
				if done != st.done || r.waiting() != st.wait || r.count() != st.guilds {
					t.Fatalf("step %d %s %v: done %v waiting %v guilds %d, want %v %v %d",
						i, st.op, st.ids, done, r.waiting(), r.count(), st.done, st.wait, st.guilds)
				}
			}
		})
	}
}

// newIdleShard returns a shard of a cluster that is never run.
func newIdleShard(t *testing.T, guildReady time.Duration) *shard {
	t.Helper()
	q, err := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := secret.NewToken("test-token")
	c, err := New(Config{ShardIDs: []int{0}, ShardCount: 1, Token: tok, Identify: q, GuildReadyTimeout: guildReady},
		nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	sh := c.shards[0]
	t.Cleanup(sh.close)
	return sh
}

// The shard's readiness is only as good as the order of its handlers:
// they must run where discordgo reads the frames.
func TestShardHandlersRunInFrameOrder(t *testing.T) {
	if sh := newIdleShard(t, time.Minute); !sh.s.SyncEvents {
		t.Fatal("the shard's session runs its handlers in goroutines of their own: readiness would depend on the scheduler")
	}
}

// A guild-ready timer whose function had started when op 9 (or the next
// READY) came must not count the new session ready.
func TestStaleGuildReadyTimeout(t *testing.T) {
	sh := newIdleShard(t, time.Hour)
	state := func() wire.ShardState { return sh.status().State }
	sh.identifySent(false, time.Now())
	sh.onReady([]string{"a", "b"}, "s1")
	sh.mu.Lock()
	first := sh.guilds.gen
	sh.mu.Unlock()
	sh.identifySent(true, time.Now()) // op 9
	sh.guildReadyTimeout(first)
	if st := state(); st != wire.ShardIdentifying {
		t.Fatalf("after the first READY's timeout, while identifying anew: %s", st)
	}
	sh.onReady([]string{"a", "b"}, "s1")
	sh.guildReadyTimeout(first)
	if st := state(); st != wire.ShardIdentifying {
		t.Fatalf("after the first READY's timeout, waiting for the second READY's guilds: %s", st)
	}
	sh.mu.Lock()
	second := sh.guilds.gen
	sh.mu.Unlock()
	sh.guildReadyTimeout(second)
	if st := state(); st != wire.ShardReady {
		t.Fatalf("after the second READY's timeout: %s", st)
	}
}

// Issue 16: op 9 to every session while its shard is still receiving the
// GUILD_CREATEs of its READY, again and again. Every shard must be ready
// as soon as the last session has sent its guilds; the guild-ready timeout
// is far beyond the test's patience, so it cannot be what rescues a shard.
func TestInvalidSessionDuringGuildsThenReady(t *testing.T) {
	const shards, guilds = 4, 240
	afters := []int{1, 0, 17, 4, 33, 9, 59, 2} // GUILD_CREATEs before each op 9
	arm := func(fake *discordtest.Server) {
		for shard := range shards {
			for _, n := range afters {
				fake.InvalidSessionDuringGuilds(shard, n)
			}
		}
	}
	fx := startClusterWith(t, discordtest.Options{Guilds: guilds, Shards: shards, MaxConcurrency: 2}, []int{0, 1, 2, 3},
		setup{arm: arm}, func(c *Config) { c.GuildReadyTimeout = 10 * patience })
	// Each armed fault cuts one session short; the last session of each
	// shard, started once they are spent, sends every guild. (Pacing is
	// TestInvalidSessionStormStaysPaced's: the fake may refuse an IDENTIFY
	// it read late on a busy machine, which only adds a session here.)
	fx.waitRecord(t, "every fault spent", func(r discordtest.Record) bool {
		started := map[int]int{}
		for _, id := range r.Identifies {
			if id.Outcome == discordtest.OutcomeReady {
				started[id.Shard]++
			}
		}
		for shard := range shards {
			if started[shard] < len(afters)+1 {
				return false
			}
		}
		return true
	})
	fx.waitStatus(t, "all ready", allReady)
	for _, s := range fx.c.Status().Shards {
		if want := len(fx.fake.GuildIDsOf(s.ID, shards)); s.Guilds != want {
			t.Errorf("shard %d: %d guilds, want %d", s.ID, s.Guilds, want)
		}
	}
}

// The shard's handlers run in the goroutine that reads the frames; a bot's
// must not: one that blocks would hold up every frame, heartbeat ACKs
// included.
func TestBlockingBotHandlerDoesNotHoldUpTheShard(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	block := func(_ *discordgo.Session, _ *discordgo.GuildCreate) {
		calls.Add(1)
		<-release
	}
	fx := startClusterWith(t, discordtest.Options{Guilds: 40, Shards: 2, MaxConcurrency: 2}, []int{0, 1},
		setup{bot: func(b *Bot) { b.Handle(block) }}, func(c *Config) { c.GuildReadyTimeout = 10 * patience })
	t.Cleanup(func() { close(release) }) // before the cluster stops: goleak
	fx.waitStatus(t, "all ready", allReady)
	eventually(t, "the bot's handler called for each of the 40 GUILD_CREATEs", func() bool { return calls.Load() == 40 })
	// Frames after the blocked handlers are still read: a Ping answered.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if _, err := fx.fake.Interact(ctx, discordtest.Interaction{GuildID: fx.fake.GuildIDs()[0], Command: "ping"}); err != nil {
		t.Errorf("ping with the bot's handlers blocked: %v", err)
	}
}
