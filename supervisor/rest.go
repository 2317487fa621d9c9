package supervisor

import (
	"fmt"
	"time"

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

// restInFlight bounds the tickets one child may have unreported; past it
// the child breaks the protocol (a cluster's REST queue holds 1,024).
const restInFlight = 4096

// restTicket answers one ticket.
func (ch *channel) restTicket(m *wire.RESTTicket, now time.Time) error {
	ch.mu.Lock()
	ch.restOpen++
	open := ch.restOpen
	ch.mu.Unlock()
	if open > restInFlight {
		return fmt.Errorf("more than %d REST tickets unreported", restInFlight)
	}
	wait := ch.rest.Ticket(m.Key, now)
	select {
	case ch.out <- &wire.RESTGrant{ID: m.ID, Wait: wait}:
	default: // the child is not reading: it times out and goes on alone
	}
	return nil
}

// restReport takes one report.
func (ch *channel) restReport(m *wire.RESTReport, now time.Time) {
	ch.mu.Lock()
	if ch.restOpen > 0 {
		ch.restOpen--
	}
	ch.mu.Unlock()
	ch.rest.Report(m.Key, ratelimit.Response{Status: m.Status, Bucket: m.Bucket, Limit: m.Limit, Remaining: m.Remaining,
		ResetAfter: m.ResetAfter, RetryAfter: m.RetryAfter, Global: m.Global, Scope: m.Scope}, now)
}
