package identify

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newQueue(t *testing.T, cfg Config) *Queue {
	t.Helper()
	if cfg.Margin == 0 {
		cfg.Margin = -1 // exact timings below; TestMargin checks the margin
	}
	q, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

type sent struct {
	shard int
	at    time.Duration
}

// identifyAll acquires for each shard in order (each queued before the
// next), waits for NotBefore like a shard would, reports Sent, and returns
// when each was sent, relative to the start.
func identifyAll(t *testing.T, q *Queue, shards []int) []sent {
	start := time.Now()
	var mu sync.Mutex
	var out []sent
	var wg sync.WaitGroup
	for _, id := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := q.Acquire(context.Background(), id)
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Until(l.NotBefore()))
			mu.Lock()
			out = append(out, sent{id, time.Since(start)})
			mu.Unlock()
			l.Sent()
		}()
		synctest.Wait() // queued before the next one
	}
	wg.Wait()
	return out
}

func TestPacingPerBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 2, Interval: 5 * time.Second})
		got := identifyAll(t, q, []int{0, 1, 2, 3, 4, 5})
		want := map[int]time.Duration{0: 0, 1: 0, 2: 5 * time.Second, 3: 5 * time.Second, 4: 10 * time.Second, 5: 10 * time.Second}
		if len(got) != len(want) {
			t.Fatalf("sent %v", got)
		}
		for _, s := range got {
			if s.at != want[s.shard] {
				t.Errorf("shard %d sent at %v, want %v (all: %v)", s.shard, s.at, want[s.shard], got)
			}
		}
	})
}

func TestLeaseHandedOutEarlyButNotBeforeSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: 5 * time.Second, LeadTime: 2 * time.Second})
		start := time.Now()
		l, _ := q.Acquire(context.Background(), 0)
		l.Sent()
		l2, _ := q.Acquire(context.Background(), 1)
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("second lease handed out at %v, want 3s (5s slot - 2s lead)", got)
		}
		if got := l2.NotBefore().Sub(start); got != 5*time.Second {
			t.Errorf("second lease NotBefore %v, want 5s", got)
		}
		l2.Cancel()
	})
}

func TestSlotCountsFromSentNotFromGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: 5 * time.Second})
		start := time.Now()
		l, _ := q.Acquire(context.Background(), 0)
		time.Sleep(1500 * time.Millisecond) // a slow dial
		l.Sent()
		l2, _ := q.Acquire(context.Background(), 1)
		if got := l2.NotBefore().Sub(start); got != 6500*time.Millisecond {
			t.Errorf("NotBefore %v after a send at 1.5s, want 6.5s", got)
		}
		l2.Cancel()
	})
}

func TestCancelFreesTheSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: 5 * time.Second})
		start := time.Now()
		l, _ := q.Acquire(context.Background(), 0)
		l.Cancel()
		l.Sent() // after Cancel: nothing
		l2, _ := q.Acquire(context.Background(), 1)
		if d := time.Since(start); d != 0 || !l2.NotBefore().Equal(start) {
			t.Errorf("after a cancel the next lease came at %v for %v, want at once", d, l2.NotBefore().Sub(start))
		}
		l2.Sent()
	})
}

func TestUnreportedLeaseExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: 5 * time.Second, LeaseTimeout: 10 * time.Second})
		start := time.Now()
		if _, err := q.Acquire(context.Background(), 0); err != nil { // holder dies, never reports
			t.Fatal(err)
		}
		l2, _ := q.Acquire(context.Background(), 1)
		// Expired at 10 s and counted as sent then: the next slot is 15 s.
		if got := l2.NotBefore().Sub(start); got != 15*time.Second {
			t.Errorf("next NotBefore %v, want 15s", got)
		}
		l2.Cancel()
	})
}

func TestAcquireCancelledWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: 5 * time.Second})
		l, _ := q.Acquire(context.Background(), 0)
		l.Sent()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := q.Acquire(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if s := q.Stats(); s.Waiting[0] != 0 || s.Leased != 0 {
			t.Fatalf("a gone waiter stayed queued: %+v", s)
		}
		// The slot it would have had (5 s) is not lost.
		start := time.Now()
		l3, _ := q.Acquire(context.Background(), 2)
		if got := l3.NotBefore().Sub(start); got != 4*time.Second {
			t.Errorf("next NotBefore in %v, want 4s", got)
		}
		l3.Cancel()
	})
}

func TestCancelRefundsBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: time.Second})
		q.SetBudget(Budget{Total: 10, Remaining: 1, ResetAt: time.Now().Add(time.Hour)})
		l, _ := q.Acquire(context.Background(), 0)
		if r := q.Stats().Budget.Remaining; r != 0 {
			t.Fatalf("remaining %d while leased, want 0", r)
		}
		l.Cancel()
		if r := q.Stats().Budget.Remaining; r != 1 {
			t.Fatalf("remaining %d after cancel, want 1", r)
		}
	})
}

func TestBackoffFactor(t *testing.T) {
	for _, tc := range []struct {
		total, remaining int
		want             float64
	}{
		{1000, 1000, 1}, {1000, 251, 1}, {1000, 250, 1}, {1000, 125, 2}, {1000, 25, 10}, {1000, 1, 64}, {1000, 0, 64},
	} {
		q := newQueue(t, Config{MaxConcurrency: 1, Interval: time.Second})
		q.SetBudget(Budget{Total: tc.total, Remaining: tc.remaining, ResetAt: time.Now().Add(time.Hour)})
		if got := q.BackoffFactor(); got != tc.want {
			t.Errorf("%d/%d: factor %v, want %v", tc.remaining, tc.total, got, tc.want)
		}
	}
	if f := newQueue(t, Config{MaxConcurrency: 1, Interval: time.Second}).BackoffFactor(); f != 1 {
		t.Errorf("unknown budget: factor %v, want 1", f)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{MaxConcurrency: 0, Interval: time.Second}, {MaxConcurrency: 1}, {MaxConcurrency: 1, Interval: time.Second, Reserve: -2}} {
		if _, err := New(cfg, nil, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	q, err := New(Config{MaxConcurrency: 2, Interval: time.Second}, nil, NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	q.SetBudget(Budget{Total: 1000, Remaining: 900, ResetAt: time.Now().Add(time.Hour)})
	l, _ := q.Acquire(context.Background(), 0)
	l.Sent()
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 10 {
		t.Fatalf("gathered %d series, err %v", n, err)
	}
}

func TestMargin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := New(Config{MaxConcurrency: 1, Interval: 5 * time.Second}, nil, nil)
		start := time.Now()
		l, _ := q.Acquire(context.Background(), 0)
		l.Sent()
		l2, _ := q.Acquire(context.Background(), 1)
		if got := l2.NotBefore().Sub(start); got != 5050*time.Millisecond {
			t.Errorf("with the default margin (1%%) the next slot is at %v, want 5.05s", got)
		}
		l2.Cancel()
	})
}
