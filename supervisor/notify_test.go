package supervisor

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// TestNotifierOnFakeClock checks, on the fake clock, what systemd is told:
// the start timeout is extended only while shards keep becoming ready,
// READY=1 comes with the status once all are, the watchdog is pinged only
// while the main loop turns, and STOPPING=1 at the stop.
func TestNotifierOnFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		plan, _ := NewPlan(PlanConfig{Shards: 2, ShardsPerCluster: 2})
		q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
		tok, _ := secret.NewToken("t")
		s, err := New(Config{Plan: plan, Launcher: &fakeLauncher{}, Queue: q, Token: tok,
			Policy:          RestartPolicy{Delay: time.Second, MaxDelay: time.Minute, Stable: time.Minute},
			ShutdownTimeout: time.Second, ChildWatchdog: time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		type msg struct {
			at    time.Duration
			state string
		}
		var mu sync.Mutex
		var got []msg
		n := NewNotifier(s, s.log)
		n.Progress = time.Minute
		n.notify = func(state string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, msg{time.Since(start), state})
			return true, nil
		}
		n.watchdog = func() (time.Duration, error) { return 2 * time.Second, nil }
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error)
		go func() { done <- n.Run(ctx) }()

		setShards := func(states ...wire.ShardState) {
			s.store.updateIn(s.store.liveSet(), 0, func(c *ClusterStatus) {
				c.State, c.PID = ClusterStarting, 42
				for i, st := range states {
					c.ShardState[i].State = st
				}
			})
		}
		healthy := func(d time.Duration) { // the main loop turns for d
			for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
				s.tick.Store(time.Now().UnixNano())
			}
		}
		setShards(wire.ShardQueued, wire.ShardQueued)
		healthy(10 * time.Second)
		setShards(wire.ShardReady, wire.ShardQueued) // progress at 10 s
		time.Sleep(90 * time.Second)                 // no progress from then on: the main loop is stalled too
		setShards(wire.ShardReady, wire.ShardReady)  // ready at 100 s
		healthy(5 * time.Second)
		s.Stop()
		synctest.Wait()
		cancel()
		<-done

		mu.Lock()
		defer mu.Unlock()
		var extends, pings []time.Duration
		var readyAt, stoppingAt time.Duration = -1, -1
		for _, m := range got {
			switch {
			case strings.HasPrefix(m.state, "EXTEND_TIMEOUT_USEC=60000000"):
				extends = append(extends, m.at)
			case m.state == "WATCHDOG=1":
				pings = append(pings, m.at)
			case strings.Contains(m.state, "READY=1"):
				readyAt = m.at
				if !strings.Contains(m.state, "STATUS=2/2 shards ready, 1/1 clusters") {
					t.Errorf("READY=1 without the status: %q", m.state)
				}
			case strings.HasPrefix(m.state, "STOPPING=1"):
				stoppingAt = m.at
			}
		}
		// Extensions every 15 s (a quarter of the window) while the last
		// progress is less than a minute old: it was at 10 s, so none after 70 s.
		wantExtends := []time.Duration{0, 15 * time.Second, 30 * time.Second, 45 * time.Second, 60 * time.Second}
		if !slices.Equal(extends, wantExtends) {
			t.Errorf("EXTEND_TIMEOUT_USEC at %v, want %v", extends, wantExtends)
		}
		if readyAt != 100*time.Second || stoppingAt != 105*time.Second {
			t.Errorf("READY=1 at %v, STOPPING=1 at %v; want 100s and 105s", readyAt, stoppingAt)
		}
		for _, p := range pings {
			if p > 11*time.Second && p < 100*time.Second {
				t.Errorf("WATCHDOG=1 at %v while the main loop was stalled", p)
			}
		}
		if len(pings) < 10 {
			t.Errorf("only %d watchdog pings while healthy", len(pings))
		}
	})
}
