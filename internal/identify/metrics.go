package identify

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the identify queue's Prometheus metrics.
type Metrics struct {
	grants prometheus.Counter
	sents  prometheus.Counter
	wait   prometheus.Histogram
	reg    prometheus.Registerer
}

// NewMetrics registers the queue's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		grants: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_identify_grants_total",
			Help: "Identify permissions handed out by the identify queue.",
		}),
		sents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_session_starts_total",
			Help: "IDENTIFYs sent (or assumed sent) under a grant of the identify queue: each spends one session start.",
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardvisor_identify_wait_seconds",
			Help:    "Time a shard waited in the identify queue for its grant.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
		}),
		reg: reg,
	}
	reg.MustRegister(m.grants, m.sents, m.wait)
	return m
}

// queueMetrics binds Metrics to a queue; nil-safe.
type queueMetrics struct{ m *Metrics }

func (m *Metrics) forQueue(q *Queue) *queueMetrics {
	if m == nil {
		return &queueMetrics{}
	}
	m.reg.MustRegister(&queueCollector{q: q})
	return &queueMetrics{m: m}
}

func (qm *queueMetrics) granted(waited time.Duration) {
	if qm.m != nil {
		qm.m.grants.Inc()
		qm.m.wait.Observe(waited.Seconds())
	}
}

func (qm *queueMetrics) sent() {
	if qm.m != nil {
		qm.m.sents.Inc()
	}
}

var (
	queueLengthDesc = prometheus.NewDesc("shardvisor_identify_queue_length",
		"Shards waiting for an identify grant, per max_concurrency bucket.", []string{"bucket"}, nil)
	remainingDesc = prometheus.NewDesc("shardvisor_session_starts_remaining",
		"Session starts Discord still allows before the reset (session_start_limit.remaining), less grants not yet reported.", nil, nil)
	limitDesc = prometheus.NewDesc("shardvisor_session_start_limit",
		"Discord's session_start_limit.total.", nil, nil)
	resetDesc = prometheus.NewDesc("shardvisor_session_starts_reset_seconds",
		"Seconds until Discord resets the session start limit.", nil, nil)
	reserveDesc = prometheus.NewDesc("shardvisor_session_starts_reserve",
		"Session starts the identify queue never spends (-session-start-reserve).", nil, nil)
	heldDesc = prometheus.NewDesc("shardvisor_session_starts_held",
		"1 while the identify queue holds every IDENTIFY for the session start budget (no more left than the reserve, or Discord not asked yet).", nil, nil)
)

// queueCollector reads the queue's state at scrape time.
type queueCollector struct{ q *Queue }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueLengthDesc
	ch <- remainingDesc
	ch <- limitDesc
	ch <- resetDesc
	ch <- reserveDesc
	ch <- heldDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.q.Stats()
	for i, n := range s.Waiting {
		ch <- prometheus.MustNewConstMetric(queueLengthDesc, prometheus.GaugeValue, float64(n), strconv.Itoa(i))
	}
	if s.Budget.Total >= 0 {
		ch <- prometheus.MustNewConstMetric(remainingDesc, prometheus.GaugeValue, float64(s.Budget.Remaining))
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(s.Budget.Total))
		ch <- prometheus.MustNewConstMetric(resetDesc, prometheus.GaugeValue, max(time.Until(s.Budget.ResetAt).Seconds(), 0))
		ch <- prometheus.MustNewConstMetric(reserveDesc, prometheus.GaugeValue, float64(s.Reserve))
	}
	ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.GaugeValue, b2f(s.Held))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
