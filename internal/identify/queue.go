// Package identify paces gateway IDENTIFYs the way Discord requires: at most
// one per bucket (shard_id % max_concurrency) per interval (5 s on Discord),
// and no more session starts than the day's session_start_limit allows.
//
// One Queue serves every shard of a bot on this machine: the supervisor's
// serves all its cluster processes over their channels; a cluster started
// alone runs its own.
//
// Pacing is by leases. Acquire waits in its bucket's FIFO and returns a
// Lease whose NotBefore is the earliest time the IDENTIFY may be sent; it is
// handed out up to LeadTime early so that the shard can dial meanwhile. The
// bucket's next slot is counted from the moment the holder reports Sent, not
// from the grant, so a slow dial can never squeeze two IDENTIFYs of one
// bucket closer than the interval. A lease given back with Cancel frees its
// slot again; one never reported within LeaseTimeout counts as sent then.
package identify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DiscordInterval is Discord's identify window per bucket.
const DiscordInterval = 5 * time.Second

// Config sets a Queue's pacing.
type Config struct {
	// MaxConcurrency is the number of buckets (Discord's max_concurrency).
	MaxConcurrency int
	// Interval is the minimum time between two IDENTIFYs of one bucket.
	Interval time.Duration
	// LeadTime is how long before its slot a lease may be handed out.
	// Zero means min(Interval, 1 s).
	LeadTime time.Duration
	// LeaseTimeout is how long after NotBefore a lease may stay unreported
	// before it counts as sent. Zero means 30 s.
	LeaseTimeout time.Duration
	// Margin is added to Interval between two IDENTIFYs of a bucket, for the
	// network: frames sent exactly Interval apart can reach Discord closer
	// together. Zero means 1% of Interval; negative means none.
	Margin time.Duration

	// Fetch, when set, asks Discord for the session start budget; Run asks
	// it, and nothing is granted before its first answer. Without it the
	// queue only paces, with whatever SetBudget told it.
	Fetch FetchFunc
	// Refresh is how often Run asks when no reset is due sooner. Zero
	// means DefaultRefresh.
	Refresh time.Duration
	// Reserve is how many session starts are never spent: grants wait
	// when no more than this many are left (AutoReserve: DefaultReserve
	// of Discord's total).
	Reserve int
}

func (c *Config) setDefaults() error {
	if c.MaxConcurrency < 1 {
		return fmt.Errorf("identify queue: max concurrency %d, must be at least 1", c.MaxConcurrency)
	}
	if c.Interval <= 0 {
		return fmt.Errorf("identify queue: interval %v, must be positive", c.Interval)
	}
	if c.LeadTime <= 0 {
		c.LeadTime = min(c.Interval, time.Second)
	}
	if c.LeaseTimeout <= 0 {
		c.LeaseTimeout = 30 * time.Second
	}
	if c.Reserve < AutoReserve {
		return fmt.Errorf("identify queue: session start reserve %d, must not be negative", c.Reserve)
	}
	if c.Refresh <= 0 {
		c.Refresh = DefaultRefresh
	}
	switch {
	case c.Margin == 0:
		c.Margin = c.Interval / 100
	case c.Margin < 0:
		c.Margin = 0
	}
	return nil
}

// Lease is the permission for one IDENTIFY.
type Lease interface {
	// NotBefore is the earliest time the IDENTIFY may be sent.
	NotBefore() time.Time
	// Sent reports that the IDENTIFY went out (now).
	Sent()
	// SentAt reports that the IDENTIFY went out at t, which is not after
	// now (a holder in another process says when it sent, without the
	// channel's latency).
	SentAt(t time.Time)
	// Cancel gives the permission back unused. After Sent it does nothing.
	Cancel()
}

// Acquirer hands out leases: a Queue, or a client of a queue elsewhere.
type Acquirer interface {
	// Acquire blocks until shard may identify, or ctx is done.
	Acquire(ctx context.Context, shard int) (Lease, error)
}

// Queue is the identify queue. Its methods are safe for concurrent use.
type Queue struct {
	cfg     Config
	log     *slog.Logger
	metrics *queueMetrics

	mu      sync.Mutex
	buckets []*bucket
	budget  budgetState
}

type bucket struct {
	id      int
	waiters []*waiter
	lease   *lease      // handed out, neither sent nor cancelled
	free    time.Time   // earliest time the next IDENTIFY may be sent
	timer   *time.Timer // wakes dispatch for this bucket
}

type waiter struct {
	shard  int
	queued time.Time
	grant  chan *lease // buffered 1
	gone   bool        // its Acquire returned
}

type lease struct {
	q         *Queue
	b         *bucket
	shard     int
	notBefore time.Time
	expiry    *time.Timer
	done      bool
}

// New returns a queue. A nil logger discards; metrics may be nil.
func New(cfg Config, logger *slog.Logger, m *Metrics) (*Queue, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	q := &Queue{cfg: cfg, log: logger, budget: budgetState{wake: make(chan struct{}, 1)}}
	q.metrics = m.forQueue(q)
	for i := range cfg.MaxConcurrency {
		q.buckets = append(q.buckets, &bucket{id: i})
	}
	return q, nil
}

// Config returns the queue's configuration, defaults filled in.
func (q *Queue) Config() Config { return q.cfg }

// Bucket returns the bucket of shard.
func (q *Queue) Bucket(shard int) int { return shard % q.cfg.MaxConcurrency }

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("identify queue closed")

// Acquire implements Acquirer: it waits in shard's bucket FIFO.
func (q *Queue) Acquire(ctx context.Context, shard int) (Lease, error) {
	if shard < 0 {
		return nil, fmt.Errorf("acquire identify for shard %d: negative shard id", shard)
	}
	q.mu.Lock()
	b := q.buckets[q.Bucket(shard)]
	w := &waiter{shard: shard, queued: time.Now(), grant: make(chan *lease, 1)}
	b.waiters = append(b.waiters, w)
	q.dispatchLocked(b)
	q.mu.Unlock()

	select {
	case l := <-w.grant:
		return l, nil
	case <-ctx.Done():
		q.mu.Lock()
		w.gone = true
		select {
		case l := <-w.grant: // granted in the meantime: give it back
			q.mu.Unlock()
			l.Cancel()
		default:
			q.removeWaiterLocked(b, w)
			q.mu.Unlock()
		}
		return nil, fmt.Errorf("acquire identify for shard %d: %w", shard, context.Cause(ctx))
	}
}

func (q *Queue) removeWaiterLocked(b *bucket, w *waiter) {
	for i, x := range b.waiters {
		if x == w {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			return
		}
	}
}

// dispatchLocked hands the bucket's next lease out if it may go now, or
// arms the bucket's timer for when it may.
func (q *Queue) dispatchLocked(b *bucket) {
	if b.lease != nil || len(b.waiters) == 0 {
		return
	}
	if q.budgetHoldLocked() {
		return // SetBudget or a refund dispatches again
	}
	now := time.Now()
	if grantAt := b.free.Add(-q.cfg.LeadTime); now.Before(grantAt) {
		q.armLocked(b, grantAt.Sub(now))
		return
	}
	w := b.waiters[0]
	b.waiters = b.waiters[1:]
	l := &lease{q: q, b: b, shard: w.shard, notBefore: b.free}
	if l.notBefore.Before(now) {
		l.notBefore = now
	}
	b.lease = l
	q.budget.take()
	l.expiry = time.AfterFunc(l.notBefore.Sub(now)+q.cfg.LeaseTimeout, l.expire)
	q.metrics.granted(now.Sub(w.queued))
	w.grant <- l
}

func (q *Queue) dispatchAllLocked() {
	for _, b := range q.buckets {
		q.dispatchLocked(b)
	}
}

func (q *Queue) armLocked(b *bucket, d time.Duration) {
	if b.timer == nil {
		b.timer = time.AfterFunc(d, func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.dispatchLocked(b)
		})
		return
	}
	b.timer.Reset(d)
}

func (l *lease) NotBefore() time.Time { return l.notBefore }

func (l *lease) Sent() { l.finish(true, "") }

// SentAt implements Lease; a t after now counts as now.
func (l *lease) SentAt(t time.Time) {
	if now := time.Now(); t.After(now) {
		t = now
	}
	l.finishAt(true, "", t)
}

// sentLater is Sent for a send that happens at t, after now (a grant
// answered over HTTP, whose holder still has to reach Discord).
func (l *lease) sentLater(t time.Time) { l.finishAt(true, "", t) }

func (l *lease) Cancel() { l.finish(false, "") }

func (l *lease) expire() {
	l.finish(true, "identify lease not reported within the lease timeout; counting it as sent")
}

func (l *lease) finish(sent bool, warn string) { l.finishAt(sent, warn, time.Now()) }

func (l *lease) finishAt(sent bool, warn string, at time.Time) {
	q := l.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	l.expiry.Stop()
	if warn != "" {
		q.log.Warn(warn, "shard_id", l.shard, "bucket", l.b.id)
	}
	if sent {
		// Counted from now, which is after the frame left: the next IDENTIFY
		// of this bucket cannot reach Discord less than Interval after it.
		l.b.free = at.Add(q.cfg.Interval + q.cfg.Margin)
		q.metrics.sent()
		q.noteSentLocked(at)
		l.b.lease = nil
		q.dispatchLocked(l.b)
		return
	}
	q.budget.refund()
	l.b.lease = nil
	q.dispatchAllLocked() // the start given back may end a hold
}

// Stats is a snapshot of the queue, for status pages and metrics.
type Stats struct {
	Waiting []int // per bucket
	Leased  int   // leases handed out and not yet reported
	Budget  Budget
	Reserve int  // session starts kept back (known with the budget)
	Held    bool // grants wait for the budget (no more left than the reserve, or Discord not yet asked)
}

// Stats returns a snapshot.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Stats{Waiting: make([]int, len(q.buckets)), Budget: q.budget.public(),
		Reserve: q.budget.reserve, Held: q.budget.holds(q.cfg.Fetch != nil)}
	for i, b := range q.buckets {
		s.Waiting[i] = len(b.waiters)
		if b.lease != nil {
			s.Leased++
		}
	}
	return s
}
