package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// discordgo's own reconnect loop outlives Close, and only
// TestDiscordgoPayloadsStartWithOp's bare session runs it: every session of
// a cluster has ShouldReconnectOnError off (shard.go).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/bwmarrin/discordgo.(*Session).reconnect"))
}

// patience bounds every wait on an event, for a busy 2-core machine under
// the race detector.
const patience = harness.Patience

// interval is the identify interval of these tests. tolerance is the fake's
// measurement slack: it timestamps an IDENTIFY when its read goroutine gets
// the frame, and under the race detector on two busy cores that is up to
// several milliseconds late. A shard that is not paced at all shows gaps
// well under a millisecond.
const (
	interval  = 50 * time.Millisecond
	tolerance = 15 * time.Millisecond
)

type fixture struct {
	fake   *discordtest.Server
	c      *Cluster
	reg    *prometheus.Registry
	done   chan error
	cancel context.CancelFunc
	sup    *fakeSupervisor // with setup.welcome
}

// startCluster runs a cluster of the given shards against a fake Discord.
func startCluster(t *testing.T, opts discordtest.Options, shards []int, mod ...func(*Config)) *fixture {
	t.Helper()
	return startClusterWith(t, opts, shards, setup{}, mod...)
}

// setup is what startClusterWith does before the cluster starts.
type setup struct {
	arm   func(*discordtest.Server) // if not nil, arms the fake's faults
	bot   func(*Bot)                // if not nil, adds to the bot
	fake  *discordtest.Server       // if not nil, the fake to use (opts are ignored)
	inbox *handoffInbox             // if not nil, the cluster takes this handoff
	// logs, if not nil, gets the cluster's log lines too, and discordgo's
	// through the cluster's translation (discordgo.Logger, restored after).
	logs io.Writer
	// welcome, if not nil, runs the cluster under a fake supervisor
	// (fixture.sup) that sends it this welcome, with the fake's token.
	welcome *wire.Welcome
}

// startClusterWith is startCluster with setup.
func startClusterWith(t *testing.T, opts discordtest.Options, shards []int, su setup, mod ...func(*Config)) *fixture {
	t.Helper()
	if opts.IdentifyInterval == 0 {
		opts.IdentifyInterval = interval
		opts.IdentifyTolerance = tolerance
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	fake := su.fake
	if fake == nil {
		var err error
		if fake, err = discordtest.NewServer(opts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fake.Close() })
	}
	if su.arm != nil {
		su.arm(fake)
	}
	fo := fake.Options()
	q, err := identify.New(identify.Config{MaxConcurrency: fo.MaxConcurrency, Interval: fo.IdentifyInterval}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := secret.NewToken(fake.Token())
	base, _ := apiurl.Parse(fake.URL())
	count := fo.Shards
	cfg := Config{ClusterID: 0, ShardIDs: shards, ShardCount: count, Token: tok, APIURL: base,
		Intents: DefaultIntents, Identify: q,
		ShardConnectTimeout: 30 * time.Second, GuildReadyTimeout: 30 * time.Second,
		MinInvalidSessionWait: 10 * time.Millisecond, MaxInvalidSessionWait: 30 * time.Millisecond,
		ReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond}
	for _, f := range mod {
		f(&cfg)
	}
	reg := prometheus.NewPedanticRegistry()
	var sup *fakeSupervisor
	if su.welcome != nil {
		w := *su.welcome
		w.Token = tok
		sup = supervise(t, &w, shards, q, reg)
		cfg.Link = sup.link
	}
	bot := NewBot()
	bot.Command(Ping())
	if su.bot != nil {
		su.bot(bot)
	}
	var out io.Writer = t.Output()
	if su.logs != nil {
		out = io.MultiWriter(out, su.logs)
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := New(cfg, bot, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	if su.logs != nil {
		prev := discordgo.Logger
		discordgo.Logger = c.DiscordgoLogger()
		t.Cleanup(func() { discordgo.Logger = prev }) // runs after the cluster stopped
	}
	c.handoff = su.inbox
	ctx, cancel := context.WithCancel(context.Background())
	fx := &fixture{fake: fake, c: c, reg: reg, done: make(chan error, 1), cancel: cancel, sup: sup}
	go func() { fx.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-fx.done:
		case <-time.After(patience):
			t.Error("cluster did not stop")
		}
	})
	return fx
}

// waitStatus waits for cond on the cluster's status.
func (fx *fixture) waitStatus(t *testing.T, what string, cond func(*wire.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond(fx.c.Status()) {
		select {
		case err := <-fx.done:
			t.Fatalf("waiting for %s: cluster returned %v", what, err)
		case <-fx.c.change: // a shard changed state
			fx.c.changed() // leave the signal for Run's loop too
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v: %+v", what, patience, fx.c.Status())
		}
	}
}

// waitRecord waits for cond on the fake's record.
func (fx *fixture) waitRecord(t *testing.T, what string, cond func(discordtest.Record) bool) discordtest.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	r, err := fx.fake.WaitFor(ctx, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return r
}

// eventually waits for cond, checking it every few milliseconds, for state
// that has no event to wait on.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	harness.Poll(t, what, 5*time.Millisecond, func() (bool, error) { return cond(), nil })
}

func allReady(st *wire.Status) bool {
	for _, s := range st.Shards {
		if s.State != wire.ShardReady {
			return false
		}
	}
	return true
}

// checkPacing fails the test if an IDENTIFY came sooner after its
// bucket's last than the fake allows (it is told the interval), or a shard
// ever had two live sessions.
func checkPacing(t *testing.T, r discordtest.Record) {
	t.Helper()
	if err := harness.CheckPacing(r); err != nil {
		t.Error(err)
	}
}

func TestShardsBecomeReadyWithTheirGuilds(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Guilds: 60, Shards: 4, MaxConcurrency: 2}, []int{0, 1, 2, 3})
	fx.waitStatus(t, "all ready", allReady)
	for _, s := range fx.c.Status().Shards {
		if want := len(fx.fake.GuildIDsOf(s.ID, 4)); s.Guilds != want || want == 0 {
			t.Errorf("shard %d: %d guilds, want %d", s.ID, s.Guilds, want)
		}
		if s.LastIdentify.IsZero() {
			t.Errorf("shard %d: no last identify", s.ID)
		}
	}
	r := fx.fake.Record()
	checkPacing(t, r)
	if len(r.Identifies) != 4 {
		t.Errorf("%d IDENTIFYs for 4 shards", len(r.Identifies))
	}
}

func TestInvalidSessionStormStaysPaced(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Guilds: 16, Shards: 4, MaxConcurrency: 2}, []int{0, 1, 2, 3})
	fx.waitStatus(t, "all ready", allReady)
	for round := range 3 {
		for shard := range 4 {
			fx.fake.InvalidSession(shard, round%2 == 1)
		}
		want := 4 * (round + 2)
		fx.waitRecord(t, "every shard identified again", func(r discordtest.Record) bool {
			n := 0
			for _, id := range r.Identifies {
				if id.Outcome == discordtest.OutcomeReady {
					n++
				}
			}
			return n >= want
		})
		fx.waitStatus(t, "all ready again", allReady)
	}
	checkPacing(t, fx.fake.Record())
	// A bare discordgo v0.29.0 answers each op 9 with an immediate IDENTIFY;
	// through the gate each one waited for its turn, and nothing more was sent.
	if n := len(fx.fake.Record().Identifies); n != 16 {
		t.Errorf("%d IDENTIFYs for 4 shards and 3 rounds of op 9, want 16", n)
	}
}

func TestReconnectsResume(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Guilds: 8, Shards: 2}, []int{0, 1})
	fx.waitStatus(t, "all ready", allReady)
	faults := []func(){
		func() { fx.fake.Reconnect(0) },            // op 7
		func() { fx.fake.Disconnect(1, 4000) },     // resumable close code
		func() { fx.fake.Disconnect(0, 0) },        // dropped TCP
		func() { fx.fake.InvalidSession(1, true) }, // op 9 d:true: discordgo identifies anyway (paced)
	}
	for i, fault := range faults {
		before := len(fx.fake.Record().Resumes) + len(fx.fake.Record().Identifies)
		fault()
		fx.waitRecord(t, "a reconnect", func(r discordtest.Record) bool { return len(r.Resumes)+len(r.Identifies) > before })
		fx.waitStatus(t, "ready again", allReady)
		if i < 3 {
			r := fx.fake.Record()
			if got := r.Resumes[len(r.Resumes)-1]; got.Outcome != discordtest.OutcomeResumed {
				t.Errorf("fault %d: resume outcome %s", i, got.Outcome)
			}
		}
	}
	r := fx.fake.Record()
	if len(r.Identifies) != 3 {
		t.Errorf("%d IDENTIFYs; want 2 at start and 1 after op 9 (the rest resumed)", len(r.Identifies))
	}
	checkPacing(t, r)
	if n := testutil.CollectAndCount(fx.reg, "shardvisor_shard_reconnects_total"); n != 4 {
		t.Errorf("%d reconnect series, want 4", n)
	}
}

func TestFatalCloseCodesStopTheCluster(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts discordtest.Options
		mod  func(*Config)
		code int
	}{
		{"bad token", discordtest.Options{}, func(c *Config) { c.Token, _ = secret.NewToken("wrong-token") }, 4004},
		{"disallowed intents", discordtest.Options{}, func(c *Config) { c.Intents |= discordgo.IntentMessageContent }, 4014},
		{"invalid intents", discordtest.Options{}, func(c *Config) { c.Intents |= 1 << 30 }, 4013},
		{"sharding required", discordtest.Options{Guilds: 20, MaxGuildsPerShard: 5}, nil, 4011},
		{"invalid shard count", discordtest.Options{Shards: 3, MaxConcurrency: 2}, nil, 4010}, // not a multiple of max_concurrency
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*Config)
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			fx := startCluster(t, tc.opts, []int{0}, mods...)
			var err error
			select {
			case err = <-fx.done:
				fx.done <- err
			case <-time.After(patience):
				t.Fatal("cluster did not stop")
			}
			var fe *FatalCloseError
			if !errors.As(err, &fe) || fe.Code != tc.code || fe.Action == "" {
				t.Fatalf("Run = %v, want a fatal close %d", err, tc.code)
			}
			if n := len(fx.fake.Record().Identifies); n > 1 {
				t.Errorf("%d IDENTIFYs: a fatal close must not be retried", n)
			}
		})
	}
}

func TestFatalCloseMidSession(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Shards: 2}, []int{0, 1})
	fx.waitStatus(t, "all ready", allReady)
	fx.fake.Disconnect(1, 4004) // the token was reset meanwhile
	select {
	case err := <-fx.done:
		fx.done <- err
		var fe *FatalCloseError
		if !errors.As(err, &fe) || fe.Code != 4004 || fe.Shard != 1 {
			t.Fatalf("Run = %v, want a fatal close 4004 of shard 1", err)
		}
	case <-time.After(patience):
		t.Fatal("cluster did not stop after 4004")
	}
}

func TestZombieConnectionIsReplaced(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Shards: 1, HeartbeatInterval: 40 * time.Millisecond}, []int{0})
	fx.waitStatus(t, "ready", allReady)
	before := len(fx.fake.Record().Connections)
	fx.fake.Zombie(0, true)
	fx.waitRecord(t, "a new connection", func(r discordtest.Record) bool { return len(r.Connections) > before })
	fx.fake.Zombie(0, false)
	fx.waitStatus(t, "ready again", allReady)
	checkPacing(t, fx.fake.Record())
}

func TestMalformedFramesDoNotCrash(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Shards: 1}, []int{0})
	fx.waitStatus(t, "ready", allReady)
	for _, kind := range []discordtest.Malformed{discordtest.MalformedJSON, discordtest.MalformedUnknownOp, discordtest.MalformedOversized} {
		fx.fake.SendMalformed(0, kind)
	}
	// Whatever discordgo made of them, the shard is ready again.
	fx.waitStatus(t, "ready after malformed frames", allReady)
	if _, err := fx.fake.Interact(context.Background(), discordtest.Interaction{GuildID: fx.fake.GuildIDs()[0], Command: "ping"}); err != nil {
		t.Fatalf("after malformed frames: %v", err)
	}
}

func TestPingAndMetrics(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Guilds: 6, Shards: 2}, []int{0, 1})
	fx.waitStatus(t, "all ready", allReady)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for _, guild := range append(fx.fake.GuildIDs()[:2], "") { // "" is a DM: shard 0
		rep, err := fx.fake.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: "ping"})
		if err != nil || rep.Content != "Pong!" {
			t.Fatalf("/ping in %q: %+v, %v", guild, rep, err)
		}
	}
	if rep, err := fx.fake.Interact(ctx, discordtest.Interaction{GuildID: fx.fake.GuildIDs()[0], Command: "nope"}); err != nil || rep.Content == "" {
		t.Errorf("an unknown command: %+v, %v; want a polite answer", rep, err)
	}
	// The reply reaches the fake just before the handler returns and counts.
	eventually(t, "three pings counted", func() bool {
		return testutil.ToFloat64(fx.c.metrics.interactions.WithLabelValues("ping", OutcomeOK)) == 3
	})
	if _, err := fx.reg.Gather(); err != nil {
		t.Errorf("gather (pedantic): %v", err)
	}
	for _, name := range []string{"shardvisor_shard_state", "shardvisor_shard_guilds", "shardvisor_gateway_events_total", "shardvisor_shard_session_starts_total"} {
		if testutil.CollectAndCount(fx.reg, name) == 0 {
			t.Errorf("no %s series", name)
		}
	}
}

func TestCloseIsParallelAndEndsSessions(t *testing.T) {
	fx := startCluster(t, discordtest.Options{Guilds: 8, Shards: 4, MaxConcurrency: 4}, []int{0, 1, 2, 3})
	fx.waitStatus(t, "all ready", allReady)
	began := time.Now()
	fx.stop(t)
	// discordgo sleeps 1 s in each close: in series four would take 4 s.
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("closing 4 sessions took %v: not in parallel", took)
	}
	r := fx.waitRecord(t, "sessions ended", func(r discordtest.Record) bool {
		for _, s := range r.Sessions {
			if s.Alive() {
				return false
			}
		}
		return true
	})
	for _, s := range r.Sessions {
		if s.CloseCode != 1000 || s.ClosedBy != discordtest.ClosedByClient || s.Resumable {
			t.Errorf("session of shard %d ended %+v; want a client close 1000", s.Shard, s)
		}
	}
}

// Unit tests of the gate, on an in-memory connection.

type fakeHooks struct {
	mu      sync.Mutex
	grant   chan identify.Lease
	sent    []bool
	resumes int
}

func (h *fakeHooks) takeLease() identify.Lease { return nil }
func (h *fakeHooks) acquire(ctx context.Context) (identify.Lease, error) {
	select {
	case l := <-h.grant:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (h *fakeHooks) identifySent(re bool, _ time.Time) {
	h.mu.Lock()
	h.sent = append(h.sent, re)
	h.mu.Unlock()
}
func (h *fakeHooks) resumeSent()                       { h.mu.Lock(); h.resumes++; h.mu.Unlock() }
func (h *fakeHooks) heartbeatSent(time.Time)           {}
func (h *fakeHooks) invalidSessionWait() time.Duration { return 0 }

type testLease struct {
	nb     time.Time
	mu     sync.Mutex
	result string
}

func (l *testLease) NotBefore() time.Time { return l.nb }
func (l *testLease) Sent()                { l.mu.Lock(); l.result = "sent"; l.mu.Unlock() }
func (l *testLease) SentAt(time.Time)     { l.Sent() }
func (l *testLease) Cancel()              { l.mu.Lock(); l.result = "cancel"; l.mu.Unlock() }

type sink struct {
	mu  sync.Mutex
	got [][]byte
}

func (s *sink) Read([]byte) (int, error) { select {} }
func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, append([]byte(nil), p...))
	return len(p), nil
}
func (s *sink) Close() error                     { return nil }
func (s *sink) LocalAddr() net.Addr              { return nil }
func (s *sink) RemoteAddr() net.Addr             { return nil }
func (s *sink) SetDeadline(time.Time) error      { return nil }
func (s *sink) SetReadDeadline(time.Time) error  { return nil }
func (s *sink) SetWriteDeadline(time.Time) error { return nil }
func (s *sink) writes() int                      { s.mu.Lock(); defer s.mu.Unlock(); return len(s.got) }

func TestGateHoldsIdentifyUntilGranted(t *testing.T) {
	hooks := &fakeHooks{grant: make(chan identify.Lease)}
	out := &sink{}
	g := newGatedConn(context.Background(), out, hooks)
	if _, err := g.Write([]byte("GET /gateway HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil { // the upgrade
		t.Fatal(err)
	}
	// A heartbeat and a resume pass at once.
	for _, p := range []string{`{"op":1,"d":3}`, `{"op":6,"d":{"session_id":"x"}}`} {
		if _, err := g.Write(encodeFrame(opText, []byte(p), true)); err != nil {
			t.Fatal(err)
		}
	}
	if out.writes() != 3 || hooks.resumes != 1 {
		t.Fatalf("writes %d resumes %d", out.writes(), hooks.resumes)
	}
	// An IDENTIFY waits for its grant.
	written := make(chan error, 1)
	go func() {
		_, err := g.Write(encodeFrame(opText, []byte(`{"op":2,"d":{"token":"t"}}`), true))
		written <- err
	}()
	select {
	case <-written:
		t.Fatal("IDENTIFY went out without a grant")
	case <-time.After(50 * time.Millisecond): // the absence of an event: bounded look
	}
	l := &testLease{nb: time.Now()}
	hooks.grant <- l
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if out.writes() != 4 || l.result != "sent" || len(hooks.sent) != 1 || !hooks.sent[0] {
		t.Fatalf("writes %d lease %q sent %v (an IDENTIFY after a RESUME on one connection is the op 9 path)", out.writes(), l.result, hooks.sent)
	}
	// Closing the connection releases a held IDENTIFY.
	go func() {
		_, err := g.Write(encodeFrame(opText, []byte(`{"op":2,"d":{}}`), true))
		written <- err
	}()
	g.Close()
	if err := <-written; !errors.Is(err, errGateClosed) {
		t.Fatalf("held write after Close: %v", err)
	}
}
