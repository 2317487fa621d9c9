package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// REST tickets (internal/wire's rest.go): every cluster asks before each
// REST request, and the supervisor's one Limiter (internal/ratelimit)
// holds the bot's global limit and every bucket, as learned from the
// reports of all clusters. A ticket is answered at once, with the wait;
// the grant is dropped rather than queued behind a child that does not
// read (the child then goes on under its own limiter), so that REST
// traffic never trips the channel's protocol checks.
//
// With a remote REST limits service (Config.RemoteREST: supervisors on
// several machines sharing one set of limits), a ticket is asked of the
// service in a goroutine of its own, never in the channel's read loop: at
// most restRemoteInFlight at once per child (past them the ticket is not
// granted, and the child goes on under its own limiter). A ticket the
// service fails (an error, or no answer within restRemoteTimeout) is
// taken from the local Limiter instead, and so is every ticket of the
// next restFallbackPeriod, without asking: the breaker. Each report goes
// to the limiter that granted its ticket, matched per key, oldest first,
// as the Limiter itself matches them.

// restInFlight bounds the tickets one child may have unreported; past it
// the child breaks the protocol (a cluster's REST queue holds 1,024).
const restInFlight = 4096

// The remote service's bounds.
const (
	restRemoteTimeout  = 100 * time.Millisecond // a ticket's answer; then the local limiter grants it
	restFallbackPeriod = 5 * time.Second        // after a failure, every ticket is local this long
	restRemoteInFlight = 256                    // tickets asked of the service at once, per child
)

// RemoteREST is a REST limits service that supervisors on several
// machines share (*ratelimit.Remote). Ticket returns the wait the service
// granted, or an error when it did not answer in time (one wrapping
// ratelimit.ErrRejected when it answered but refused that key). Report
// and Cancel must not block.
type RemoteREST interface {
	Ticket(ctx context.Context, key string) (time.Duration, error)
	Report(key string, r ratelimit.Response)
	Cancel(key string)
}

// restLimits are the supervisor's REST limits: its own Limiter, and the
// remote service with its breaker when there is one.
type restLimits struct {
	local     *ratelimit.Limiter
	remote    RemoteREST // nil: the local Limiter alone
	log       *slog.Logger
	fallbacks prometheus.Counter

	mu        sync.Mutex
	downUntil time.Time // until then every ticket is local
	down      bool      // a fallback period began and the service has not answered since
}

// newRESTLimits returns nil without a local limiter: no REST tickets.
func newRESTLimits(local *ratelimit.Limiter, remote RemoteREST, logger *slog.Logger) *restLimits {
	if local == nil {
		return nil
	}
	return &restLimits{local: local, remote: remote, log: logger,
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_rest_remote_fallbacks_total",
			Help: "Times the REST limits service (-rest-limits-url) failed a ticket (an error, or no answer within 100 ms), after which this supervisor's clusters took their tickets from its own limits for 5 s.",
		})}
}

// useRemote reports whether a ticket asked at now goes to the service.
func (r *restLimits) useRemote(now time.Time) bool {
	if r.remote == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !now.Before(r.downUntil)
}

// failed opens the breaker after the service failed a ticket at now; a
// failure while it is open (another ticket asked at the same time) does
// not count again.
func (r *restLimits) failed(now time.Time, err error) {
	r.mu.Lock()
	if now.Before(r.downUntil) {
		r.mu.Unlock()
		return
	}
	r.downUntil, r.down = now.Add(restFallbackPeriod), true
	r.mu.Unlock()
	r.fallbacks.Inc()
	r.log.Warn("REST limits service unreachable; this supervisor's clusters share its own limits until it answers",
		"retry_in", restFallbackPeriod, "err", err)
}

// answered notes a ticket the service granted.
func (r *restLimits) answered() {
	r.mu.Lock()
	was := r.down
	r.down = false
	r.mu.Unlock()
	if was {
		r.log.Info("REST limits service answers again; the clusters' tickets come from it")
	}
}

// restSource is which limiter holds a ticket.
type restSource uint8

const (
	restPending restSource = iota // asked of the service, not answered yet
	restLocal                     // the supervisor's Limiter
	restRemote                    // the service
	restNone                      // nobody: not granted
)

// restTicketState is one of a child's unreported tickets, with a remote
// service. A report that comes while the ticket is still pending waits in
// it for the answer, to go where the ticket went.
type restTicketState struct {
	src      restSource
	reported bool
	resp     ratelimit.Response
}

// restTicket answers one ticket.
func (ch *channel) restTicket(m *wire.RESTTicket, now time.Time) error {
	ch.mu.Lock()
	ch.restOpen++
	open := ch.restOpen
	ch.mu.Unlock()
	if open > restInFlight {
		return fmt.Errorf("more than %d REST tickets unreported", restInFlight)
	}
	rl := ch.rest
	if rl.remote == nil {
		ch.grantREST(m.ID, rl.local.Ticket(m.Key, now))
		return nil
	}
	e := &restTicketState{src: restLocal}
	if rl.useRemote(now) {
		select {
		case ch.restSem <- struct{}{}:
			e.src = restPending
		default: // as many asked already: the child goes on alone
			e.src = restNone
		}
	}
	ch.mu.Lock()
	if ch.restHeld >= restInFlight {
		ch.mu.Unlock()
		if e.src == restPending {
			<-ch.restSem
		}
		return fmt.Errorf("more than %d REST tickets unreported", restInFlight)
	}
	if ch.restFrom == nil {
		ch.restFrom = map[string][]*restTicketState{}
	}
	ch.restFrom[m.Key] = append(ch.restFrom[m.Key], e)
	ch.restHeld++
	ch.mu.Unlock()
	switch e.src {
	case restLocal:
		ch.grantREST(m.ID, rl.local.Ticket(m.Key, now))
	case restPending:
		ch.wg.Add(1)
		go func() {
			defer ch.wg.Done()
			defer func() { <-ch.restSem }()
			ch.remoteTicket(m, e)
		}()
	}
	return nil
}

// remoteTicket asks the service for the ticket, or the local limiter when
// the service fails it, and grants it.
func (ch *channel) remoteTicket(m *wire.RESTTicket, e *restTicketState) {
	rl := ch.rest
	ctx, cancel := context.WithTimeout(ch.ctx, restRemoteTimeout)
	wait, err := rl.remote.Ticket(ctx, m.Key)
	cancel()
	src := restRemote
	switch {
	case err == nil:
		rl.answered()
	case ch.ctx.Err() != nil: // the child is gone: nobody waits for it
		src = restNone
	case errors.Is(err, ratelimit.ErrRejected): // the service is there; this key is not one it takes
		ch.log.Debug("REST limits service refused a ticket; granted locally", "key", m.Key, "err", err)
		src, wait = restLocal, rl.local.Ticket(m.Key, time.Now())
	default:
		rl.failed(time.Now(), err)
		src, wait = restLocal, rl.local.Ticket(m.Key, time.Now())
	}
	ch.mu.Lock()
	e.src = src
	reported, resp := e.reported, e.resp
	ch.mu.Unlock()
	switch {
	case reported: // the child went without the grant; its report was waiting for this
		ch.deliverREST(src, m.Key, resp, time.Now())
	case src != restNone:
		ch.grantREST(m.ID, wait)
	}
}

// grantREST sends a grant, or drops it when the child does not read: it
// times out and goes on alone.
func (ch *channel) grantREST(id uint64, wait time.Duration) {
	select {
	case ch.out <- &wire.RESTGrant{ID: id, Wait: wait}:
	default:
	}
}

// restReport takes one report.
func (ch *channel) restReport(m *wire.RESTReport, now time.Time) {
	ch.mu.Lock()
	if ch.restOpen > 0 {
		ch.restOpen--
	}
	ch.mu.Unlock()
	resp := ratelimit.Response{Status: m.Status, Bucket: m.Bucket, Limit: m.Limit, Remaining: m.Remaining,
		ResetAfter: m.ResetAfter, RetryAfter: m.RetryAfter, Global: m.Global, Scope: m.Scope}
	if ch.rest.remote == nil {
		ch.rest.local.Report(m.Key, resp, now)
		return
	}
	src := restNone // no ticket: learned from locally, as an answer without one is
	ch.mu.Lock()
	if q := ch.restFrom[m.Key]; len(q) > 0 {
		e := q[0]
		if len(q) == 1 {
			delete(ch.restFrom, m.Key)
		} else {
			q[0] = nil
			ch.restFrom[m.Key] = q[1:]
		}
		ch.restHeld--
		if e.src == restPending {
			e.reported, e.resp = true, resp
			ch.mu.Unlock()
			return
		}
		src = e.src
	}
	ch.mu.Unlock()
	ch.deliverREST(src, m.Key, resp, now)
}

// deliverREST gives a report to the limiter that holds its ticket; one
// that nobody granted is learned from locally (a cancel of it is nothing).
func (ch *channel) deliverREST(src restSource, key string, resp ratelimit.Response, now time.Time) {
	rl := ch.rest
	switch {
	case src == restRemote && resp.Status == 0:
		rl.remote.Cancel(key)
	case src == restRemote:
		rl.remote.Report(key, resp)
	case src == restLocal:
		rl.local.Report(key, resp, now)
	case resp.Status != 0:
		rl.local.Report(key, resp, now)
	}
}
