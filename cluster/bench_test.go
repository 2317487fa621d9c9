package cluster

import (
	"context"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
)

// What a cluster costs: run with `make bench`, or
//
//	go test -run '^$' -bench . -benchtime 1x ./cluster/
//
// Both benchmarks run the fake Discord in this process, on the same cores
// as the client: it takes its share of the CPU, which a real deployment's
// Discord does not.

// benchFake starts a fake Discord for a benchmark: no pacing, no session
// start limit to speak of, nothing logged.
func benchFake(b *testing.B, o discordtest.Options) *discordtest.Server {
	b.Helper()
	o.IdentifyInterval, o.SessionStartLimit = 1, 1<<30
	o.Logger = slog.New(slog.DiscardHandler)
	fake, err := discordtest.NewServer(o)
	if err != nil {
		b.Fatal(err)
	}
	return fake
}

// benchCluster runs a cluster of shards 0..shards-1 against fake with the
// given cache and bot until stop is called; it returns once every shard is
// ready (READY and every GUILD_CREATE). prep, if set, changes the cluster
// before it runs.
func benchCluster(b *testing.B, fake *discordtest.Server, shards int, cache Cache, bot *Bot, prep func(*Cluster)) (stop func()) {
	b.Helper()
	q, err := identify.New(identify.Config{MaxConcurrency: fake.Options().MaxConcurrency, Interval: time.Millisecond}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := secret.NewToken(fake.Token())
	base, _ := apiurl.Parse(fake.URL())
	ids := make([]int, shards)
	for i := range ids {
		ids[i] = i
	}
	c, err := New(Config{ShardIDs: ids, ShardCount: shards, Token: tok, APIURL: base, Intents: DefaultIntents,
		Cache: cache, Identify: q, GuildReadyTimeout: 5 * time.Minute, ShardConnectTimeout: 5 * time.Minute}, bot, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if prep != nil {
		prep(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("cluster: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for !allReady(c.Status()) {
		select {
		case err := <-done:
			b.Fatalf("cluster stopped before it was ready: %v", err)
		case <-c.change:
			c.changed()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			b.Fatalf("cluster not ready within 5 minutes: %+v", c.Status())
		}
	}
	return stop
}

// benchBare opens shards plain discordgo sessions against fake, set up as a
// cluster's shards are (intents, cache, HTTP client, log level) but
// without the gate, the shard's handlers or metrics; handler is added to
// each. It returns once every session has had its READY.
func benchBare(b *testing.B, fake *discordtest.Server, shards int, cache Cache, handler any) (stop func()) {
	b.Helper()
	base, _ := apiurl.Parse(fake.URL())
	client := HTTPClient(base)
	sessions := make([]*discordgo.Session, shards)
	ready := make(chan struct{}, shards)
	for i := range sessions {
		s, _ := discordgo.New("Bot " + fake.Token())
		s.ShardID, s.ShardCount = i, shards
		s.Identify.Intents = DefaultIntents
		s.Client = client
		s.LogLevel = discordgo.LogWarning
		cache.apply(s.State)
		s.AddHandler(handler)
		s.AddHandler(func(*discordgo.Session, *discordgo.Ready) { ready <- struct{}{} })
		if err := s.Open(); err != nil {
			b.Fatalf("open shard %d: %v", i, err)
		}
		sessions[i] = s
	}
	stop = func() {
		var wg sync.WaitGroup
		for _, s := range sessions {
			wg.Go(func() { s.Close() }) // discordgo sleeps 1 s in there
		}
		wg.Wait()
	}
	for range shards {
		select {
		case <-ready:
		case <-time.After(5 * time.Minute):
			stop()
			b.Fatal("bare sessions not ready within 5 minutes")
		}
	}
	return stop
}

// BenchmarkDispatchThroughput has the fake send MESSAGE_CREATEs as fast as
// it can to 4 shards, as 4 plain discordgo sessions and as one cluster of
// 4 shards (through the gate, with the shard's handlers and metrics), both
// with the default -state-cache and one counting handler, and reports the
// MESSAGE_CREATEs each handled per second and the cluster's rate as a share
// of the plain sessions' (goal: 0.95 or more). Other work on a shared
// machine comes and goes: the two run in turn, in pairs whose order
// alternates, and median-cluster/bare is the median of the pairs' shares,
// cluster/bare the share of the totals.
func BenchmarkDispatchThroughput(b *testing.B) {
	const (
		shards = 4
		pairs  = 4
		warmup = 500 * time.Millisecond
		window = 1500 * time.Millisecond
	)
	cache, err := ParseCache(DefaultCache)
	if err != nil {
		b.Fatal(err)
	}
	var bareTotal, clusterTotal float64
	var shares []float64
	for range b.N {
		fake := benchFake(b, discordtest.Options{Guilds: 64, Shards: shards, MaxConcurrency: shards})
		var count atomic.Int64
		handler := func(*discordgo.Session, *discordgo.MessageCreate) { count.Add(1) }
		measure := func() float64 {
			fake.SetEventRate(1e7) // more than any client reads: the fake's backlog bound holds it back
			time.Sleep(warmup)
			n0, t0 := count.Load(), time.Now()
			time.Sleep(window)
			n1, t1 := count.Load(), time.Now()
			fake.SetEventRate(0)
			return float64(n1-n0) / t1.Sub(t0).Seconds()
		}
		bare := func() float64 {
			stop := benchBare(b, fake, shards, cache, handler)
			defer stop()
			return measure()
		}
		clustered := func() float64 {
			bot := NewBot()
			bot.Handle(handler)
			stop := benchCluster(b, fake, shards, cache, bot, nil)
			defer stop()
			return measure()
		}
		for i := range pairs {
			var br, cr float64
			if i%2 == 0 {
				br, cr = bare(), clustered()
			} else {
				cr, br = clustered(), bare()
			}
			bareTotal += br
			clusterTotal += cr
			shares = append(shares, cr/br)
		}
		fake.Close()
	}
	n := float64(b.N * pairs)
	slices.Sort(shares)
	b.ReportMetric(bareTotal/n, "bare-events/s")
	b.ReportMetric(clusterTotal/n, "cluster-events/s")
	b.ReportMetric(clusterTotal/bareTotal, "cluster/bare")
	b.ReportMetric((shares[(len(shares)-1)/2]+shares[len(shares)/2])/2, "median-cluster/bare")
}

// BenchmarkClusterMemory runs a cluster of 4 shards over 8,000 guilds (10
// channels, 10 roles and 10 members each) with the default -state-cache
// and with none, and reports the Go heap the cluster holds once every
// GUILD_CREATE has arrived, less the heap before it started, per 1,000
// guilds (after a GC, so live objects only). The fake's own memory is in
// it too, the same in every case: mostly its replay ring, up to 1,024
// frames or 4 MiB per session, so at most 2 MiB per 1,000 guilds here.
//
// discordgo v0.29.0's Track* settings, which -state-cache sets, only
// decide what later events (CHANNEL_CREATE, GUILD_MEMBER_ADD, ...) add:
// GUILD_CREATE stores the whole guild, its channels, roles and members
// included, whatever they say. The third case, state=off, turns discordgo's
// State off altogether (StateEnabled false; no flag does that today) to
// show what that would save.
func BenchmarkClusterMemory(b *testing.B) {
	const (
		shards = 4
		guilds = 8000
	)
	stateOff := func(c *Cluster) {
		for _, sh := range c.shards {
			sh.s.StateEnabled = false
		}
	}
	for _, tc := range []struct {
		name, cache string
		prep        func(*Cluster)
	}{
		{"cache=default", DefaultCache, nil},
		{"cache=none", "none", nil},
		{"state=off", "none", stateOff},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cache, err := ParseCache(tc.cache)
			if err != nil {
				b.Fatal(err)
			}
			var live, inuse float64
			for range b.N {
				fake := benchFake(b, discordtest.Options{Guilds: guilds, Shards: shards, MaxConcurrency: shards,
					ChannelsPerGuild: 10, RolesPerGuild: 10, MembersPerGuild: 10})
				before := heap()
				stop := benchCluster(b, fake, shards, cache, nil, tc.prep)
				after := heap()
				live += float64(after.HeapAlloc) - float64(before.HeapAlloc)
				inuse += float64(after.HeapInuse) - float64(before.HeapInuse)
				stop()
				fake.Close()
			}
			per := float64(b.N) * guilds / 1000 * 1024
			b.ReportMetric(live/per, "heap-KiB/1000guilds")
			b.ReportMetric(inuse/per, "heap-inuse-KiB/1000guilds")
			b.ReportMetric(guilds, "guilds")
		})
	}
}

// heap is the heap's state after a full collection.
func heap() runtime.MemStats {
	runtime.GC()
	runtime.GC() // finalizers of the first run freed more
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
