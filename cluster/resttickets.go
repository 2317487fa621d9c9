package cluster

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// REST tickets (the protocol is in internal/wire's rest.go): when the
// welcome says RESTTickets, every REST request of the cluster's sessions
// asks the supervisor, which holds the bot's limits, for a ticket first,
// and reports the response's rate-limit headers after it. The supervisor
// is never a reason for a request to hang: a ticket not granted within
// restGrantTimeout (the supervisor stopped, slow, or gone), or one that
// cannot even be queued, lets the request go under the cluster's own
// limiter (discordgo's, one for all its shards), and is counted.

// restGrantTimeout is how long a request waits for its grant before it
// goes without one; a grant on one machine takes well under a millisecond.
const restGrantTimeout = 250 * time.Millisecond

// restQueue bounds the tickets and reports waiting to be written to the
// supervisor; beyond it a request goes without a ticket.
const restQueue = 1024

// linkREST is the link's part: the writer of tickets and reports, and the
// requests waiting for grants.
type linkREST struct {
	out chan wire.Message

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan time.Duration
}

func (r *linkREST) init() {
	r.out = make(chan wire.Message, restQueue)
	r.waiting = map[uint64]chan time.Duration{}
}

// writeREST writes queued tickets and reports until the link is done, so
// that a stopped supervisor blocks this goroutine, not a request.
func (l *Link) writeREST() {
	for {
		select {
		case m := <-l.rest.out:
			l.send(m)
		case <-l.done:
			return
		}
	}
}

// ticket asks the supervisor for a slot on the route key and returns the
// wait it granted, or false when it granted none in time; queued says
// whether the ticket went out at all (then the request must be reported,
// granted or not: the supervisor counts it in flight until then).
func (l *Link) ticket(ctx context.Context, key string) (wait time.Duration, granted, queued bool) {
	r := &l.rest
	ch := make(chan time.Duration, 1)
	r.mu.Lock()
	r.next++
	id := r.next
	r.waiting[id] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, id)
		r.mu.Unlock()
	}()
	select {
	case r.out <- &wire.RESTTicket{ID: id, Key: key}:
	default:
		return 0, false, false
	}
	t := time.NewTimer(restGrantTimeout)
	defer t.Stop()
	select {
	case w := <-ch:
		return w, true, true
	case <-t.C:
	case <-ctx.Done():
	case <-l.done:
	}
	return 0, false, true
}

// restGranted delivers a grant to the request waiting for it, if it still
// does.
func (l *Link) restGranted(g *wire.RESTGrant) {
	l.rest.mu.Lock()
	ch := l.rest.waiting[g.ID]
	l.rest.mu.Unlock()
	if ch != nil {
		select {
		case ch <- g.Wait:
		default:
		}
	}
}

// report queues what a response said; dropped when the queue is full.
func (l *Link) report(m *wire.RESTReport) {
	select {
	case l.rest.out <- m:
	default:
	}
}

// restTransport is the cluster's REST transport: with tickets when link
// is set, else under the process's own limiter alone (counted as local).
type restTransport struct {
	next    http.RoundTripper
	link    *Link // nil: no tickets
	metrics *restMetrics
}

type restMetrics struct {
	tickets *prometheus.CounterVec
	waited  prometheus.Histogram
}

func newRESTMetrics(reg prometheus.Registerer) *restMetrics {
	m := &restMetrics{
		tickets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_rest_tickets_total",
			Help: "REST requests of this process by ticket: granted (the supervisor's shared limits), or local (no grant in time, or no shared limits: the process's own limiter).",
		}, []string{"ticket"}),
		waited: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardvisor_rest_held_seconds",
			Help:    "How long REST requests of this process were held before they were sent: the ticket's round trip and the wait it granted.",
			Buckets: []float64{.0005, .001, .005, .025, .1, .25, 1, 5, 30},
		}),
	}
	m.tickets.WithLabelValues("granted")
	m.tickets.WithLabelValues("local")
	if reg != nil {
		reg.MustRegister(m.tickets, m.waited)
	}
	return m
}

func (t *restTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.link == nil {
		t.metrics.tickets.WithLabelValues("local").Inc()
		return t.next.RoundTrip(req)
	}
	key := ratelimit.RouteKey(req.Method, req.URL.Path)
	asked := time.Now()
	wait, ok, queued := t.link.ticket(req.Context(), key)
	if ok {
		t.metrics.tickets.WithLabelValues("granted").Inc()
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-req.Context().Done():
				timer.Stop()
				t.link.report(&wire.RESTReport{Key: key})
				return nil, req.Context().Err()
			}
		}
	} else {
		t.metrics.tickets.WithLabelValues("local").Inc()
	}
	t.metrics.waited.Observe(time.Since(asked).Seconds())
	resp, err := t.next.RoundTrip(req)
	rep := &wire.RESTReport{Key: key}
	if err == nil {
		r := ratelimit.ParseHeaders(resp.StatusCode, resp.Header)
		rep = &wire.RESTReport{Key: key, Status: r.Status, Bucket: r.Bucket, Limit: r.Limit, Remaining: r.Remaining,
			ResetAfter: r.ResetAfter, RetryAfter: r.RetryAfter, Global: r.Global, Scope: r.Scope}
	}
	if queued {
		if rep.Validate() != nil { // headers no Discord sends: the status alone
			rep = &wire.RESTReport{Key: key, Status: rep.Status}
			if rep.Validate() != nil {
				rep.Status = 0
			}
		}
		t.link.report(rep)
	}
	return resp, err
}
