package ratelimit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxRouteLabels caps the route label of shardvisor_rest_requests_total:
// the first routes seen get their own, the rest share "other".
const maxRouteLabels = 200

// statusClasses are the class label values by status/100; "none" is a
// request that got no answer.
var statusClasses = [...]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}

// routeCounters are one route label's request counters, by status class.
type routeCounters [len(statusClasses)]prometheus.Counter

// metrics are the limiter's Prometheus metrics; a nil *metrics counts
// nothing.
type metrics struct {
	requests    *prometheus.CounterVec
	limited     map[string]prometheus.Counter
	wait        prometheus.Histogram
	globalWaits prometheus.Counter
	expired     prometheus.Counter
	slowed      prometheus.Counter
	labels      int            // route labels handed out; under the limiter's lock
	other       *routeCounters // the "other" label's
}

func newMetrics(l *Limiter, reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_rest_requests_total",
			Help: "REST requests reported to the rate limiter, by route (its key with the major parameter replaced; the first 200, then \"other\") and status class (\"none\": no answer).",
		}, []string{"route", "class"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardvisor_rest_ticket_wait_seconds",
			Help:    "How long the rate limiter told a REST request to wait before it is sent.",
			Buckets: []float64{0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		globalWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_rest_global_waits_total",
			Help: "REST tickets that wait for the global limit (full, or paused by a global 429).",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_rest_tickets_expired_total",
			Help: "REST tickets never reported nor cancelled, forgotten after the ticket TTL.",
		}),
		slowed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_rest_slowed_tickets_total",
			Help: "REST tickets given half their bucket's limit because invalid requests are past the slow down threshold.",
		}),
	}
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shardvisor_rest_rate_limited_total",
		Help: "REST answers 429, by X-RateLimit-Scope (user, global, shared; unknown: without rate limit headers).",
	}, []string{"scope"})
	m.limited = make(map[string]prometheus.Counter)
	for _, s := range []string{ScopeUser, ScopeGlobal, ScopeShared, "unknown"} {
		m.limited[s] = limited.WithLabelValues(s)
	}
	m.other = m.countersFor("other")
	reg.MustRegister(m.requests, limited, m.wait, m.globalWaits, m.expired, m.slowed, &collector{l: l})
	return m
}

func (m *metrics) countersFor(label string) *routeCounters {
	var c routeCounters
	for i, class := range statusClasses {
		c[i] = m.requests.WithLabelValues(label, class)
	}
	return &c
}

// routeCounters returns the counters of a new route; under the lock.
func (m *metrics) routeCounters(route string) *routeCounters {
	if m == nil {
		return nil
	}
	if m.labels >= maxRouteLabels {
		return m.other
	}
	m.labels++
	return m.countersFor(route)
}

func (m *metrics) request(rt *route, status int) {
	if m == nil || rt.reqs == nil {
		return
	}
	class := status / 100
	if class < 0 || class >= len(statusClasses) {
		class = 0
	}
	rt.reqs[class].Inc()
}

func (m *metrics) limited429(scope string) {
	if m == nil {
		return
	}
	if c := m.limited[scope]; c != nil {
		c.Inc()
	}
}

func (m *metrics) ticket(wait time.Duration, global, slowed bool) {
	if m == nil {
		return
	}
	m.wait.Observe(wait.Seconds())
	if global {
		m.globalWaits.Inc()
	}
	if slowed {
		m.slowed.Inc()
	}
}

func (m *metrics) expire(n int) {
	if m != nil {
		m.expired.Add(float64(n))
	}
}

var (
	invalidDesc = prometheus.NewDesc("shardvisor_rest_invalid_requests",
		"Invalid REST requests (401, 403, 429 but scope shared) in Discord's sliding window; the IP is banned at shardvisor_rest_invalid_requests_limit.", nil, nil)
	invalidLimitDesc = prometheus.NewDesc("shardvisor_rest_invalid_requests_limit",
		"Invalid REST requests in the window at which Discord bans the IP.", nil, nil)
	slowdownDesc = prometheus.NewDesc("shardvisor_rest_slowdown",
		"1 while invalid REST requests are past the slow down threshold and buckets that had one get half their limit.", nil, nil)
	globalUsedDesc = prometheus.NewDesc("shardvisor_rest_global_used",
		"REST requests under the global limit sent in the last second.", nil, nil)
	globalLimitDesc = prometheus.NewDesc("shardvisor_rest_global_limit",
		"The global REST limit, requests per second.", nil, nil)
	globalPausedDesc = prometheus.NewDesc("shardvisor_rest_global_paused_seconds",
		"Seconds left of the pause a global 429 imposed; 0 when none.", nil, nil)
	bucketsDesc = prometheus.NewDesc("shardvisor_rest_buckets",
		"REST bucket states held by the rate limiter (per bucket and major parameter).", nil, nil)
	inflightDesc = prometheus.NewDesc("shardvisor_rest_tickets_in_flight",
		"REST tickets handed out and not yet reported.", nil, nil)
	waitingDesc = prometheus.NewDesc("shardvisor_rest_tickets_waiting",
		"REST tickets whose send time is still ahead.", nil, nil)
)

// collector reads the limiter's state at scrape time.
type collector struct{ l *Limiter }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{invalidDesc, invalidLimitDesc, slowdownDesc, globalUsedDesc,
		globalLimitDesc, globalPausedDesc, bucketsDesc, inflightDesc, waitingDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(invalidDesc, float64(s.Invalid))
	gauge(invalidLimitDesc, float64(s.InvalidLimit))
	slowed := 0.0
	if s.Slowed {
		slowed = 1
	}
	gauge(slowdownDesc, slowed)
	gauge(globalUsedDesc, float64(s.GlobalUsed))
	gauge(globalLimitDesc, float64(s.GlobalLimit))
	paused := 0.0
	if !s.GlobalPausedUntil.IsZero() {
		paused = max(s.GlobalPausedUntil.Sub(c.l.cfg.Now()).Seconds(), 0)
	}
	gauge(globalPausedDesc, paused)
	gauge(bucketsDesc, float64(s.Buckets))
	gauge(inflightDesc, float64(s.InFlight))
	gauge(waitingDesc, float64(s.Waiting))
}
