package identify

import (
	"context"
	"time"
)

// Budget is Discord's session_start_limit: how many IDENTIFYs the bot may
// still send before ResetAt. Discord resets a bot's token when it is spent.
type Budget struct {
	Total     int
	Remaining int
	ResetAt   time.Time
}

// assumedReset is how far ahead the next reset is assumed to be after one
// passed, until a refresh says otherwise (Discord's is daily).
const assumedReset = 24 * time.Hour

type budgetState struct {
	known   bool
	b       Budget
	waiting bool // logged that grants wait for the reset
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

// budgetWaitLocked returns how long grants must wait for the budget: zero
// when starts remain (or nothing is known), else the time to the reset.
func (q *Queue) budgetWaitLocked(now time.Time) time.Duration {
	s := &q.budget
	if !s.known || s.b.Remaining > 0 {
		return 0
	}
	if !now.Before(s.b.ResetAt) {
		s.b.Remaining = s.b.Total
		s.b.ResetAt = now.Add(assumedReset)
		if s.waiting {
			s.waiting = false
			q.log.Info("session start limit reset; identifying again", "remaining", s.b.Remaining)
		}
		return 0
	}
	if !s.waiting {
		s.waiting = true
		q.log.Warn("session start limit spent; holding every IDENTIFY until the reset rather than get the token reset",
			"total", s.b.Total, "reset_at", s.b.ResetAt.Format(time.RFC3339), "wait", s.b.ResetAt.Sub(now).Round(time.Second))
	}
	return s.b.ResetAt.Sub(now)
}

// SetBudget replaces what the queue knows of the session start limit, from
// GET /gateway/bot. Leases handed out and not yet reported are taken off
// Remaining, since Discord has not seen them yet.
func (q *Queue) SetBudget(b Budget) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, bk := range q.buckets {
		if bk.lease != nil {
			b.Remaining--
		}
	}
	b.Remaining = max(b.Remaining, 0)
	q.budget.known = true
	q.budget.b = b
	for _, bk := range q.buckets {
		q.dispatchLocked(bk)
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

// FetchFunc reads the budget from Discord (GET /gateway/bot).
type FetchFunc func(ctx context.Context) (Budget, error)

// RefreshBudget keeps the queue's budget current: it fetches now, then every
// `every`, and right after a reset was due. It returns when ctx is done.
// Failed fetches are logged and retried at the next tick.
func (q *Queue) RefreshBudget(ctx context.Context, fetch FetchFunc, every time.Duration) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		b, err := fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			q.log.Warn("refresh session start limit", "err", err)
		} else {
			q.SetBudget(b)
		}
		next := every
		if b.Remaining == 0 && !b.ResetAt.IsZero() {
			next = min(next, max(time.Until(b.ResetAt)+time.Second, time.Second))
		}
		t.Reset(next)
	}
}
