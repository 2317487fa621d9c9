package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// fakeSupervisor is the supervisor's end of a cluster's channel: it
// grants IDENTIFYs from a local queue, keeps the last status report, and
// hands metrics answers and fleet replies to whoever waits for them.
type fakeSupervisor struct {
	link *Link
	conn *wire.Conn
	q    identify.Acquirer
	ctx  context.Context

	mu      sync.Mutex
	leases  map[uint64]identify.Lease
	status  *wire.Status
	changed chan struct{} // a status arrived
	metrics map[uint64]chan *wire.Metrics
	replies map[uint64]chan *wire.FleetReply
	seq     atomic.Uint64
}

// supervise connects a Link for shards to a fake supervisor that sends
// welcome, and runs both until the test ends, after the cluster's stop.
func supervise(t *testing.T, welcome *wire.Welcome, shards []int, q identify.Acquirer, gather prometheus.Gatherer) *fakeSupervisor {
	t.Helper()
	pc, cf, err := wire.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	ctx, cancel := context.WithCancel(context.Background())
	sup := &fakeSupervisor{conn: wire.NewConn(pc, 5*time.Second), q: q, ctx: ctx, leases: map[uint64]identify.Lease{},
		changed: make(chan struct{}, 1), metrics: map[uint64]chan *wire.Metrics{}, replies: map[uint64]chan *wire.FleetReply{}}
	go sup.conn.Write(welcome)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	l, err := Connect(cf.Fd(), &wire.Hello{ClusterID: 0, PID: 1, ShardIDs: shards}, patience, log)
	if err != nil {
		cancel()
		sup.conn.Close()
		t.Fatal(err)
	}
	if m, err := sup.conn.Read(); err != nil || m.Type() != wire.TypeHello {
		t.Fatalf("hello: %v %v", m, err)
	}
	l.SetGatherer(gather)
	sup.link = l
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.Run(ctx) }()
	go func() { defer wg.Done(); sup.serve() }()
	t.Cleanup(func() { cancel(); sup.conn.Close(); wg.Wait() })
	return sup
}

func (sup *fakeSupervisor) serve() {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := sup.conn.Read()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *wire.IdentifyRequest:
			wg.Add(1)
			go func() { defer wg.Done(); sup.grant(m) }()
		case *wire.IdentifyDone:
			sup.mu.Lock()
			l := sup.leases[m.Seq]
			delete(sup.leases, m.Seq)
			sup.mu.Unlock()
			switch {
			case l == nil:
			case m.Sent && m.SentAt != 0:
				l.SentAt(wire.MonoTime(m.SentAt))
			case m.Sent:
				l.Sent()
			default:
				l.Cancel()
			}
		case *wire.Status:
			sup.mu.Lock()
			sup.status = m
			sup.mu.Unlock()
			select {
			case sup.changed <- struct{}{}:
			default:
			}
		case *wire.Metrics:
			sup.mu.Lock()
			ch := sup.metrics[m.ID]
			sup.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		case *wire.FleetReply:
			sup.mu.Lock()
			ch := sup.replies[m.ID]
			sup.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		}
	}
}

func (sup *fakeSupervisor) grant(m *wire.IdentifyRequest) {
	l, err := sup.q.Acquire(sup.ctx, m.Shard)
	if err != nil {
		return
	}
	sup.mu.Lock()
	sup.leases[m.Seq] = l
	sup.mu.Unlock()
	if err := sup.conn.Write(&wire.IdentifyGrant{Shard: m.Shard, Seq: m.Seq, Delay: max(0, time.Until(l.NotBefore()))}); err != nil {
		l.Cancel()
	}
}

// send writes m to the cluster.
func (sup *fakeSupervisor) send(t *testing.T, m wire.Message) {
	t.Helper()
	if err := sup.conn.Write(m); err != nil {
		t.Fatalf("send %s: %v", m.Type(), err)
	}
}

// waitStatus waits for a status report from the cluster that meets cond.
func (sup *fakeSupervisor) waitStatus(t *testing.T, what string, cond func(*wire.Status) bool) {
	t.Helper()
	deadline := time.After(patience)
	for {
		sup.mu.Lock()
		st := sup.status
		sup.mu.Unlock()
		if st != nil && cond(st) {
			return
		}
		select {
		case <-sup.changed:
		case <-deadline:
			t.Fatalf("the supervisor got no report of %s within %v: %+v", what, patience, st)
		}
	}
}

// gauge asks the cluster for its metrics over the channel, as a scrape
// does, and returns the value of the gauge name. The link reads the
// supervisor's messages in order: what was sent before is handled.
func (sup *fakeSupervisor) gauge(t *testing.T, name string) float64 {
	t.Helper()
	id := sup.seq.Add(1)
	ch := make(chan *wire.Metrics, 1)
	sup.mu.Lock()
	sup.metrics[id] = ch
	sup.mu.Unlock()
	sup.send(t, &wire.MetricsRequest{ID: id})
	var m *wire.Metrics
	select {
	case m = <-ch:
	case <-time.After(patience):
		t.Fatal("no metrics from the cluster")
	}
	dec := expfmt.NewDecoder(bytes.NewReader(m.Data), expfmt.NewFormat(expfmt.TypeProtoDelim))
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("decode metrics: %v", err)
			}
			t.Fatalf("metric %s not exported", name)
		}
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
}

// fleet sends the cluster a fleet request and returns its reply.
func (sup *fakeSupervisor) fleet(t *testing.T, name string) *wire.FleetReply {
	t.Helper()
	id := sup.seq.Add(1)
	ch := make(chan *wire.FleetReply, 1)
	sup.mu.Lock()
	sup.replies[id] = ch
	sup.mu.Unlock()
	sup.send(t, &wire.FleetRequest{ID: id, Name: name, Timeout: wire.MaxFleetTimeout})
	select {
	case r := <-ch:
		return r
	case <-time.After(patience):
		t.Fatalf("no reply to the fleet request %s", name)
		return nil
	}
}

// botSeen is what a test bot's handlers saw.
type botSeen struct {
	mu           sync.Mutex
	readies      int
	guildCreates int
	events       int // *discordgo.Event
	messages     int
	interactions []string // ids
	commands     int
	message      chan struct{} // a MESSAGE_CREATE reached the handler
}

func (b *botSeen) add(bot *Bot) {
	b.message = make(chan struct{}, 1)
	bot.Handle(func(*discordgo.Session, *discordgo.Ready) { b.mu.Lock(); b.readies++; b.mu.Unlock() })
	bot.Handle(func(*discordgo.Session, *discordgo.GuildCreate) { b.mu.Lock(); b.guildCreates++; b.mu.Unlock() })
	bot.Handle(func(*discordgo.Session, *discordgo.Event) { b.mu.Lock(); b.events++; b.mu.Unlock() })
	bot.Handle(func(_ *discordgo.Session, _ *discordgo.MessageCreate) {
		b.mu.Lock()
		b.messages++
		b.mu.Unlock()
		select {
		case b.message <- struct{}{}:
		default:
		}
	})
	bot.Handle(func(_ *discordgo.Session, i *discordgo.InteractionCreate) {
		b.mu.Lock()
		b.interactions = append(b.interactions, i.ID)
		b.mu.Unlock()
	})
	bot.Command(&discordgo.ApplicationCommand{Name: "count", Description: "counts"}, func(i *Interaction) error {
		b.mu.Lock()
		b.commands++
		b.mu.Unlock()
		return i.Reply("counted")
	})
}

func (b *botSeen) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	j, _ := json.Marshal(map[string]any{"readies": b.readies, "guild_creates": b.guildCreates, "events": b.events,
		"messages": b.messages, "interactions": b.interactions, "commands": b.commands})
	return string(j)
}

func (fx *fixture) events(typ string) float64 {
	return testutil.ToFloat64(fx.c.metrics.events.WithLabelValues(typ))
}

// A cluster welcomed with Shadow gets every shard ready, reports it and
// serves its metrics and fleet requests, but hands the bot nothing — no
// READY, GUILD_CREATE or MESSAGE_CREATE reaches a handler, no interaction
// a command — until Live; then the events that arrive do, and those that
// came before are not replayed.
func TestShadowHandsNothingToTheBotUntilLive(t *testing.T) {
	var seen botSeen
	var logs syncBuffer
	fx := startClusterWith(t, discordtest.Options{Guilds: 6, Shards: 2, EventRate: 100}, []int{0, 1},
		setup{bot: seen.add, welcome: &wire.Welcome{Shadow: true}, logs: &logs})
	fx.waitStatus(t, "ready", allReady)
	fx.sup.waitStatus(t, "every shard ready", func(st *wire.Status) bool { return len(st.Shards) == 2 && allReady(st) })
	if v := fx.sup.gauge(t, "shardvisor_cluster_shadow"); v != 1 {
		t.Fatalf("shardvisor_cluster_shadow = %v in shadow", v)
	}
	if r := fx.sup.fleet(t, StatsRequest); r.Code != wire.FleetOK {
		t.Fatalf("a fleet request in shadow: %+v", r)
	}
	for _, sh := range fx.c.shards {
		sh.s.State.RLock()
		guilds := len(sh.s.State.Guilds)
		sh.s.State.RUnlock()
		if want := len(fx.fake.GuildIDsOf(sh.id, 2)); guilds != want || want == 0 {
			t.Fatalf("shard %d's State has %d guilds in shadow, want %d", sh.id, guilds, want)
		}
	}

	// An interaction in shadow: the cluster gets it (counted after every
	// handler of its frame has run) and answers nothing.
	guild := fx.fake.GuildIDsOf(0, 2)[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shadowReply := make(chan error, 1)
	go func() {
		_, err := fx.fake.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: "count"})
		shadowReply <- err
	}()
	eventually(t, "the interaction and some messages received in shadow", func() bool {
		return fx.events("INTERACTION_CREATE") == 1 && fx.events("MESSAGE_CREATE") >= 20
	})
	if s := seen.String(); s != `{"commands":0,"events":0,"guild_creates":0,"interactions":null,"messages":0,"readies":0}` {
		t.Fatalf("the bot's handlers saw %s in shadow", s)
	}
	if n := testutil.ToFloat64(fx.c.metrics.interactions.WithLabelValues("count", OutcomeOK)); n != 0 {
		t.Fatalf("%v interactions answered in shadow", n)
	}

	fx.sup.send(t, &wire.Live{})
	if v := fx.sup.gauge(t, "shardvisor_cluster_shadow"); v != 0 {
		t.Fatalf("shardvisor_cluster_shadow = %v after Live", v)
	}
	if !strings.Contains(logs.String(), `msg="going live" shards=2`) {
		t.Errorf("no going-live line in the log:\n%s", logs.String())
	}
	rctx, rcancel := context.WithTimeout(context.Background(), patience)
	defer rcancel()
	rep, err := fx.fake.Interact(rctx, discordtest.Interaction{GuildID: guild, Command: "count"})
	if err != nil || rep.Content != "counted" {
		t.Fatalf("interaction after Live: %+v, %v", rep, err)
	}
	select {
	case <-seen.message:
	case <-time.After(patience):
		t.Fatal("no MESSAGE_CREATE reached the bot after Live")
	}
	live := fx.fake.Record().Interactions[1].ID
	eventually(t, "the bot's handler saw the interaction after Live", func() bool {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		return len(seen.interactions) > 0
	})
	cancel()
	if err := <-shadowReply; err == nil {
		t.Error("the interaction sent in shadow was answered")
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.interactions) != 1 || seen.interactions[0] != live || seen.commands != 1 {
		t.Errorf("the bot saw interactions %v (want only %s), ran the command %d times", seen.interactions, live, seen.commands)
	}
	if seen.readies != 0 || seen.guildCreates != 0 || seen.events == 0 {
		t.Errorf("after Live the bot saw %d READY, %d GUILD_CREATE (both came in shadow), %d raw events", seen.readies, seen.guildCreates, seen.events)
	}
	if r := fx.fake.Record().Interactions[0]; len(r.Replies) != 0 {
		t.Errorf("the interaction sent in shadow got replies %+v", r.Replies)
	}
}

// A Live to a cluster not in shadow changes nothing: it was live from the
// start and stays so, without a going-live line.
func TestLiveToALiveClusterChangesNothing(t *testing.T) {
	var seen botSeen
	var logs syncBuffer
	fx := startClusterWith(t, discordtest.Options{Guilds: 2, Shards: 1, EventRate: 100}, []int{0},
		setup{bot: seen.add, welcome: &wire.Welcome{}, logs: &logs})
	fx.waitStatus(t, "ready", allReady)
	if v := fx.sup.gauge(t, "shardvisor_cluster_shadow"); v != 0 {
		t.Fatalf("shardvisor_cluster_shadow = %v without Shadow", v)
	}
	ask := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if rep, err := fx.fake.Interact(ctx, discordtest.Interaction{GuildID: fx.fake.GuildIDs()[0], Command: "count"}); err != nil || rep.Content != "counted" {
			t.Fatalf("interaction: %+v, %v", rep, err)
		}
	}
	ask()
	fx.sup.send(t, &wire.Live{})
	if v := fx.sup.gauge(t, "shardvisor_cluster_shadow"); v != 0 {
		t.Fatalf("shardvisor_cluster_shadow = %v after Live", v)
	}
	ask()
	select {
	case <-seen.message:
	case <-time.After(patience):
		t.Fatal("no MESSAGE_CREATE reached the bot")
	}
	eventually(t, "the bot's handlers saw READY and both interactions", func() bool {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		return seen.readies == 1 && len(seen.interactions) == 2
	})
	if strings.Contains(logs.String(), "going live") {
		t.Errorf("a live cluster logged going live:\n%s", logs.String())
	}
}

// A frame is handed to every handler of the bot or to none, even when Live
// arrives between two of its handlers; the next frame is decided anew.
// discordgo's own events are decided each as it comes.
func TestShadowDecidesOncePerFrame(t *testing.T) {
	c := &Cluster{}
	sh := &shard{c: c}
	msg, ev := &discordgo.MessageCreate{}, &discordgo.Event{}
	if sh.handles(msg) {
		t.Fatal("a frame in shadow was handed to the bot")
	}
	c.live.Store(true)
	if sh.handles(ev) || sh.handles(msg) {
		t.Fatal("Live in the middle of a frame split it")
	}
	if !sh.handles(&discordgo.Connect{}) || !sh.handles(&discordgo.Disconnect{}) || !sh.handles(&discordgo.RateLimit{}) {
		t.Fatal("discordgo's own events are not decided on their own")
	}
	sh.frameDone(nil, ev)
	if !sh.handles(msg) || !sh.handles(ev) {
		t.Fatal("the frame after Live was not handed to the bot")
	}
}
