package identify

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// discordWindow is Discord's session start limit as a bot sees it: a
// window of `window` opened by the first start after a reset, `limit`
// starts in it, and the token reset for one more. Requests and IDENTIFYs
// take `latency` each way.
type discordWindow struct {
	limit   int
	window  time.Duration
	latency time.Duration
	failAsk func(n int) bool // the nth request (from 0) fails

	mu       sync.Mutex
	left     int
	resetAt  time.Time // zero: no window runs
	perWin   []int     // starts per window, in order
	overruns int
	asks     int
	answered time.Time // first answer given
	first    time.Time // first start
}

func newDiscordWindow(limit int, window, latency time.Duration) *discordWindow {
	return &discordWindow{limit: limit, window: window, latency: latency, left: limit}
}

func (d *discordWindow) refreshLocked(now time.Time) {
	if !d.resetAt.IsZero() && !now.Before(d.resetAt) {
		d.left, d.resetAt = d.limit, time.Time{}
	}
}

// identify is an IDENTIFY arriving now.
func (d *discordWindow) identify() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	d.refreshLocked(now)
	if d.first.IsZero() {
		d.first = now
	}
	if d.left == 0 {
		d.overruns++
		return
	}
	if d.resetAt.IsZero() {
		d.resetAt = now.Add(d.window)
		d.perWin = append(d.perWin, 0)
	}
	d.left--
	d.perWin[len(d.perWin)-1]++
}

// fetch is GET /gateway/bot as discordapi does it: ResetAt counted from
// the answer's arrival.
func (d *discordWindow) fetch(ctx context.Context) (Budget, error) {
	time.Sleep(d.latency)
	d.mu.Lock()
	n := d.asks
	d.asks++
	now := time.Now()
	d.refreshLocked(now)
	left, after := d.left, d.window
	if !d.resetAt.IsZero() {
		after = d.resetAt.Sub(now)
	}
	fail := d.failAsk != nil && d.failAsk(n)
	if !fail && d.answered.IsZero() {
		d.answered = now
	}
	d.mu.Unlock()
	time.Sleep(d.latency)
	if fail {
		return Budget{}, errors.New("503 Service Unavailable")
	}
	return Budget{Total: d.limit, Remaining: left, ResetAt: time.Now().Add(after)}, nil
}

// start identifies shards through q as a cluster would: the IDENTIFY
// leaves at NotBefore, is reported sent, and reaches Discord later.
func (d *discordWindow) start(ctx context.Context, t *testing.T, q *Queue, wg *sync.WaitGroup, shards ...int) {
	for _, shard := range shards {
		wg.Go(func() {
			l, err := q.Acquire(ctx, shard)
			if err != nil {
				t.Errorf("shard %d: %v", shard, err)
				return
			}
			time.Sleep(time.Until(l.NotBefore()))
			l.Sent()
			time.Sleep(d.latency)
			d.identify()
		})
	}
}

func shardRange(from, n int) []int {
	var s []int
	for i := range n {
		s = append(s, from+i)
	}
	return s
}

// TestBudgetDecisions drives the queue against a model of Discord's
// window on a fake clock: a start is spent only when Discord has said it
// is there, the reserve is kept, and what was held goes after the reset.
func TestBudgetDecisions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		limit     int
		window    time.Duration
		latency   time.Duration
		reserve   int
		firstAt   time.Duration // when the first shards start (after the first answer)
		first     int           // shards starting then
		more      int           // shards restarting later
		moreAt    time.Duration // when, after the first
		failAsk   func(n int) bool
		wantPerWn []int // starts per window
	}{
		{name: "fits", limit: 10, window: 20 * time.Second, first: 4, more: 2, moreAt: 5 * time.Second, wantPerWn: []int{6}},
		// The case of issue 17: 12 starts per 20 s, 8 shards, 6 restarts.
		{name: "spent, more wanted, the reset passes", limit: 12, window: 20 * time.Second, first: 8, more: 6, moreAt: 5 * time.Second, wantPerWn: []int{12, 2}},
		{name: "the reserve is kept", limit: 12, window: 20 * time.Second, reserve: 2, first: 8, more: 6, moreAt: 5 * time.Second, wantPerWn: []int{10, 4}},
		{name: "auto reserve", limit: 40, window: 20 * time.Second, reserve: AutoReserve, first: 30, more: 20, moreAt: 5 * time.Second, wantPerWn: []int{38, 12}},
		// The first answer predates the window: a reset computed from it
		// is early by the time to the first IDENTIFY plus the latency.
		{name: "reset edge: the window opens after the answer", limit: 4, window: 10 * time.Second, latency: 300 * time.Millisecond, firstAt: time.Second, first: 4, more: 4, moreAt: time.Second, wantPerWn: []int{4, 4}},
		{name: "reset edge: restarts wanted just before the reset", limit: 4, window: 10 * time.Second, latency: 50 * time.Millisecond, first: 4, more: 3, firstAt: 500 * time.Millisecond, moreAt: 9990 * time.Millisecond, wantPerWn: []int{4, 3}},
		{name: "nothing before the first answer", limit: 4, window: 10 * time.Second, first: 2, failAsk: func(n int) bool { return n < 3 }, wantPerWn: []int{2}},
		{name: "requests fail at the reset", limit: 4, window: 10 * time.Second, first: 4, more: 2, moreAt: time.Second,
			failAsk: func(n int) bool { return n >= 2 && n < 6 }, wantPerWn: []int{4, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDiscordWindow(tc.limit, tc.window, tc.latency)
				d.failAsk = tc.failAsk
				q := newQueue(t, Config{MaxConcurrency: 64, Interval: 5 * time.Second, Fetch: d.fetch, Reserve: tc.reserve})
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				done := make(chan error)
				go func() { done <- q.Run(ctx) }()
				var wg sync.WaitGroup
				time.Sleep(tc.firstAt) // a cluster process starts
				d.start(ctx, t, q, &wg, shardRange(0, tc.first)...)
				if tc.more > 0 {
					time.Sleep(tc.moreAt)
					d.start(ctx, t, q, &wg, shardRange(tc.first, tc.more)...)
				}
				wg.Wait()
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.overruns != 0 {
					t.Errorf("%d IDENTIFYs past the limit: the token would be reset", d.overruns)
				}
				if !slices.Equal(d.perWin, tc.wantPerWn) {
					t.Errorf("starts per window %v, want %v", d.perWin, tc.wantPerWn)
				}
				if d.first.Before(d.answered) {
					t.Errorf("first start at %v, before Discord's first answer at %v", d.first, d.answered)
				}
			})
		})
	}
}

// An IDENTIFY sent just before a request may reach Discord after it: the
// answer does not count it, and the queue must not give it back.
func TestBudgetAnswerThatPredatesAStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, Config{MaxConcurrency: 4, Interval: time.Second, Fetch: func(context.Context) (Budget, error) { return Budget{}, errors.New("not asked") }})
		q.SetBudget(Budget{Total: 10, Remaining: 2, ResetAt: time.Now().Add(time.Hour)})
		l, _ := q.Acquire(context.Background(), 0)
		l.Sent()
		asked := time.Now().Add(time.Second) // sent 1 s before the request left
		time.Sleep(3 * time.Second)
		q.SetBudget(Budget{Total: 10, Remaining: 2, ResetAt: time.Now().Add(time.Hour), Asked: asked})
		if r := q.Stats().Budget.Remaining; r != 1 {
			t.Errorf("remaining %d after an answer that missed a start, want 1", r)
		}
		q.SetBudget(Budget{Total: 10, Remaining: 1, ResetAt: time.Now().Add(time.Hour), Asked: time.Now()})
		if r := q.Stats().Budget.Remaining; r != 1 {
			t.Errorf("remaining %d after an answer that counts it, want 1", r)
		}
	})
}

// Run asks at once, after Refresh, at the reset plus the margin, retries
// failures with a growing delay, and asks at once when a hold begins.
func TestBudgetRunAsks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var (
			mu   sync.Mutex
			asks []time.Duration
			n    int
		)
		asked := func() []time.Duration { mu.Lock(); defer mu.Unlock(); return slices.Clone(asks) }
		fetch := func(context.Context) (Budget, error) {
			mu.Lock()
			defer mu.Unlock()
			n++
			asks = append(asks, time.Since(start))
			switch n {
			case 2, 3:
				return Budget{}, errors.New("503")
			case 4:
				return Budget{Total: 10, Remaining: 1, ResetAt: time.Now().Add(30 * time.Second)}, nil
			}
			return Budget{Total: 10, Remaining: 10 - 9*min(n/5, 1), ResetAt: time.Now().Add(time.Hour)}, nil
		}
		q := newQueue(t, Config{MaxConcurrency: 4, Interval: time.Second, Fetch: fetch})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- q.Run(ctx) }()
		time.Sleep(11 * time.Minute)
		// 0; Refresh; its failures retried after 1 s, then 2 s; then the
		// reset 30 s after the 4th answer, plus the margin.
		want := []time.Duration{0, 10 * time.Minute, 10*time.Minute + time.Second, 10*time.Minute + 3*time.Second, 10*time.Minute + 35*time.Second}
		if got := asked(); !slices.Equal(got, want) {
			t.Errorf("asked at %v, want %v", got, want)
		}
		l, _ := q.Acquire(ctx, 0) // the last start above the reserve of 0
		l.Sent()
		go q.Acquire(ctx, 1) // held: Run asks at once
		synctest.Wait()
		if got := asked()[len(asked())-1]; got != 11*time.Minute {
			t.Errorf("asked at %v after the hold began at 11m", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestDefaultReserve(t *testing.T) {
	for total, want := range map[int]int{1: 1, 12: 1, 20: 1, 21: 2, 1000: 50, 2000: 100} {
		if got := DefaultReserve(total); got != want {
			t.Errorf("DefaultReserve(%d) = %d, want %d", total, got, want)
		}
	}
	q := newQueue(t, Config{MaxConcurrency: 1, Interval: time.Second, Reserve: 5})
	q.SetBudget(Budget{Total: 3, Remaining: 3, ResetAt: time.Now().Add(time.Hour)})
	if s := q.Stats(); s.Reserve != 2 {
		t.Errorf("a reserve of 5 with a limit of 3 is kept as %d, want 2", s.Reserve)
	}
}
