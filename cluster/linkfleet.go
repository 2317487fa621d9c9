package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// linkFleet is the Link's part in fleet calls: those this cluster makes,
// waiting for their answers, and the cluster that serves requests.
type linkFleet struct {
	local atomic.Pointer[Local] // set by New; nil: requests are unavailable
	seq   atomic.Uint64

	mu    sync.Mutex
	calls map[uint64]*fleetWait
}

// fleetGrace is how long a caller waits past its deadline for the
// supervisor, which answers every call by then, before it gives up on it.
const fleetGrace = time.Second

// fleetWait collects one call's answers.
type fleetWait struct {
	name string
	done chan struct{} // closed when every answer is in, or the call was refused

	mu      sync.Mutex
	answers []Answer
	of      int // answers due; -1 until the first says
	refused error
	closed  bool
}

func (w *fleetWait) add(a *wire.FleetAnswer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if a.Cluster < 0 {
		w.refused = &FleetError{Name: w.name, ClusterID: -1, Code: a.Code, Message: a.Error}
	} else {
		w.answers = append(w.answers, answerOf(w.name, a.Cluster, a.Code, a.Error, a.Data))
		w.of = a.Of
	}
	if w.refused != nil || len(w.answers) >= w.of {
		w.closed = true
		close(w.done)
	}
}

// serveFleet answers one request the supervisor routed to this cluster.
func (l *Link) serveFleet(ctx context.Context, r *wire.FleetRequest) {
	loc := l.fleet.local.Load()
	if loc == nil {
		l.send(&wire.FleetReply{ID: r.ID, Code: wire.FleetUnavailable, Error: "the cluster is not running yet"})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	l.send(loc.serve(ctx, r))
}

// fleetAnswered hands an answer to its call; one for a call that gave up
// meanwhile is dropped.
func (l *Link) fleetAnswered(a *wire.FleetAnswer) {
	l.fleet.mu.Lock()
	w := l.fleet.calls[a.ID]
	l.fleet.mu.Unlock()
	if w != nil {
		w.add(a)
	}
}

// fleetCall sends c and waits for its answers, until c's timeout (plus a
// grace for the supervisor's own answers of "deadline"), ctx, or the
// supervisor's going. Clusters that did not answer get an Answer with the
// reason.
func (l *Link) fleetCall(ctx context.Context, c *wire.FleetCall) ([]Answer, error) {
	if !l.welcome.Fleet {
		// An older supervisor (a rolling restart to a new binary runs new
		// clusters under the old supervisor) would cut this cluster off.
		return nil, &FleetError{Name: c.Name, ClusterID: -1, Code: wire.FleetUnavailable,
			Message: "the supervisor does not route fleet calls: it is older than this cluster; restart it"}
	}
	c.ID = l.fleet.seq.Add(1)
	w := &fleetWait{name: c.Name, of: -1, done: make(chan struct{})}
	l.fleet.mu.Lock()
	if l.fleet.calls == nil {
		l.fleet.calls = map[uint64]*fleetWait{}
	}
	l.fleet.calls[c.ID] = w
	l.fleet.mu.Unlock()
	defer func() {
		l.fleet.mu.Lock()
		delete(l.fleet.calls, c.ID)
		l.fleet.mu.Unlock()
	}()
	if err := l.conn.Write(c); err != nil {
		return nil, fmt.Errorf("fleet call %q: send to supervisor: %w", c.Name, err)
	}
	grace := time.NewTimer(c.Timeout + fleetGrace)
	defer grace.Stop()
	var why error
	select {
	case <-w.done:
	case <-ctx.Done():
		why = fmt.Errorf("fleet call %q: no answer: %w", c.Name, context.Cause(ctx))
	case <-l.done:
		why = fmt.Errorf("fleet call %q: %w", c.Name, ErrSupervisorGone)
	case <-grace.C:
		why = fmt.Errorf("fleet call %q: the supervisor did not answer: %w", c.Name, context.DeadlineExceeded)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.refused != nil {
		return nil, w.refused
	}
	answers := w.answers
	if why == nil {
		return answers, nil
	}
	switch {
	case c.To == wire.ToAll && w.of < 0:
		return nil, why
	case c.To == wire.ToAll:
		seen := map[int]bool{}
		for _, a := range answers {
			seen[a.ClusterID] = true
		}
		for id := range w.of { // the plan's clusters are 0 to of-1
			if !seen[id] {
				answers = append(answers, Answer{ClusterID: id, Err: why})
			}
		}
	case len(answers) == 0:
		id := c.Cluster
		if c.To == wire.ToGuild {
			id = -1
		}
		answers = append(answers, Answer{ClusterID: id, Err: why})
	}
	return answers, nil
}
