package identify

import (
	"context"
	"time"
)

// Budget is Discord's session_start_limit: how many IDENTIFYs the bot may
// still send before the window resets. Discord resets a bot's token when
// one more is sent: the bot is offline until a person puts in a new one.
type Budget struct {
	Total     int
	Remaining int
	// ResetAt is when the window resets, on this machine's clock: the
	// answer's arrival plus reset_after, so never early by the latency.
	ResetAt time.Time
	// Asked is when the request left. Discord's Remaining may miss starts
	// sent shortly before it (their IDENTIFY still on its way); the queue
	// takes those off again. Zero means the moment the queue is told.
	Asked time.Time
}

// FetchFunc asks Discord for the budget (GET /gateway/bot).
type FetchFunc func(ctx context.Context) (Budget, error)

const (
	// DefaultRefresh is how often Run asks Discord when nothing is due.
	DefaultRefresh = 10 * time.Minute
	// AutoReserve as Config.Reserve keeps DefaultReserve(total) back.
	AutoReserve = -1

	// resetMargin is how long past a reset computed here Run waits before
	// it asks whether the starts are back: the reset is Discord's to say.
	resetMargin = 2 * time.Second
	// answerSlack: starts sent this long before a request may be missing
	// from its answer.
	answerSlack = 2 * time.Second
	// Failed requests are retried after retryMin, doubling up to retryMax.
	retryMin = time.Second
	retryMax = time.Minute
)

// DefaultReserve is the number of session starts kept back by default: 5%
// of the limit, at least one (50 of Discord's usual 1000 a day). A restart
// loop then cannot spend the last starts of the window; they are left for
// the operator's own restart once the cause is fixed.
func DefaultReserve(total int) int { return max(1, (total+19)/20) }

// budgetState is the queue's view of the budget. With Config.Fetch set,
// nothing is granted before Discord's first answer, and a grant is held
// whenever the starts left, as counted since the last answer, are at or
// below the reserve: only an answer from Discord (or a lease given back)
// ends a hold, never the local clock.
type budgetState struct {
	known   bool
	b       Budget
	reserve int
	held    bool
	sends   []time.Time   // starts sent since the last answer's Asked - answerSlack (with Fetch)
	wake    chan struct{} // asks Run to ask Discord now
}

func (s *budgetState) take() {
	if s.known {
		s.b.Remaining--
	}
}

func (s *budgetState) refund() {
	if s.known && s.b.Remaining < s.b.Total {
		s.b.Remaining++
	}
}

func (s *budgetState) public() Budget {
	if !s.known {
		return Budget{Remaining: -1, Total: -1}
	}
	return s.b
}

// holds reports whether grants would wait for the budget now.
func (s *budgetState) holds(fetching bool) bool {
	if !s.known {
		return fetching
	}
	return s.b.Remaining <= s.reserve
}

// budgetHoldLocked reports whether grants must wait for the budget, and
// logs when that changes.
func (q *Queue) budgetHoldLocked() bool {
	s := &q.budget
	hold := s.holds(q.cfg.Fetch != nil)
	if !s.known { // the first answer is still to come: nothing to log
		s.held = hold
		return hold
	}
	switch {
	case hold && !s.held:
		q.log.Warn("session start limit reached; holding every IDENTIFY until Discord reports starts again, rather than get the token reset",
			"remaining", s.b.Remaining, "reserve", s.reserve, "total", s.b.Total,
			"reset_at", s.b.ResetAt.Format(time.RFC3339), "reset_in", time.Until(s.b.ResetAt).Round(time.Second))
		select { // our count may be pessimistic: let Run ask now
		case s.wake <- struct{}{}:
		default:
		}
	case !hold && s.held:
		q.log.Info("session starts available again; identifying", "remaining", s.b.Remaining, "reserve", s.reserve)
	}
	s.held = hold
	return hold
}

// SetBudget tells the queue Discord's answer. Starts it may not count yet
// (leases out, and IDENTIFYs sent since b.Asked less a slack) are taken
// off Remaining. Run calls it with every answer; call it yourself only for
// an answer got before Run started.
func (q *Queue) SetBudget(b Budget) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.setBudgetLocked(b)
}

func (q *Queue) setBudgetLocked(b Budget) {
	s := &q.budget
	if b.Asked.IsZero() {
		b.Asked = time.Now()
	}
	since := b.Asked.Add(-answerSlack)
	kept := s.sends[:0]
	for _, at := range s.sends {
		if !at.Before(since) {
			kept = append(kept, at)
		}
	}
	s.sends = kept
	unseen := len(kept)
	for _, bk := range q.buckets {
		if bk.lease != nil {
			unseen++
		}
	}
	b.Remaining = max(b.Remaining-unseen, 0)
	s.known, s.b = true, b
	s.reserve = q.cfg.Reserve
	if s.reserve == AutoReserve {
		s.reserve = DefaultReserve(b.Total)
	}
	if s.reserve >= b.Total && b.Total > 0 {
		q.log.Warn("session start reserve is not below Discord's limit; keeping all but one back", "reserve", s.reserve, "total", b.Total)
		s.reserve = b.Total - 1
	}
	q.dispatchAllLocked()
}

// nextAskLocked is when Run should ask Discord next: at the reset (plus
// the margin) when one is known, else after Config.Refresh.
func (q *Queue) nextAskLocked(now time.Time) time.Duration {
	next := q.cfg.Refresh
	if s := q.budget; s.known && !s.b.ResetAt.IsZero() {
		next = min(next, max(s.b.ResetAt.Add(resetMargin).Sub(now), retryMin))
	}
	return next
}

// noteSentLocked records a start, for the next answer.
func (q *Queue) noteSentLocked(at time.Time) {
	if q.cfg.Fetch != nil {
		q.budget.sends = append(q.budget.sends, at)
	}
}

// Run keeps the budget current by asking Config.Fetch: at once, at every
// reset, every Config.Refresh, and when a hold begins (at most once per
// second). Failed requests are logged and retried after 1 s, doubling up
// to a minute; grants stay held meanwhile if Discord has not said starts
// are left. Without Fetch it only waits. It returns nil when ctx is done.
// With Fetch set, Run must run: nothing is granted before its first answer.
func (q *Queue) Run(ctx context.Context) error {
	if q.cfg.Fetch == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var retry time.Duration
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-q.budget.wake:
			if d := retryMin - time.Since(last); d > 0 {
				t.Reset(d)
				continue
			}
		}
		asked := time.Now()
		last = asked
		b, err := q.cfg.Fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			retry = min(max(2*retry, retryMin), retryMax)
			q.log.Warn("ask Discord for the session start limit", "err", err, "retry_in", retry)
			t.Reset(retry)
			continue
		}
		retry = 0
		if b.Asked.IsZero() {
			b.Asked = asked
		}
		q.mu.Lock()
		q.setBudgetLocked(b)
		next := q.nextAskLocked(time.Now())
		q.mu.Unlock()
		t.Reset(next)
	}
}

// BackoffFactor is how much longer restarts should wait because the session
// start budget runs low: 1 while more than a quarter of it remains, growing
// as it shrinks (each restart of a cluster costs one start per shard).
func (q *Queue) BackoffFactor() float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.budget
	if !s.known || s.b.Total <= 0 || s.b.Remaining*4 > s.b.Total {
		return 1
	}
	f := float64(s.b.Total) / 4 / float64(max(s.b.Remaining, 1))
	return min(max(f, 1), 64)
}
