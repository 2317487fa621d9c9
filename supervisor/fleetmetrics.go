package supervisor

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// maxFleetNames bounds the name label: names beyond it count as "other".
const maxFleetNames = 200

// fleetMetrics count the fleet calls the supervisor routes. The name label
// takes only names some cluster answered successfully (and the built-in
// ones), so that a caller's typos cannot grow it: others are "other".
type fleetMetrics struct {
	answers  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge

	mu    sync.Mutex
	names map[string]bool
}

func newFleetMetrics() *fleetMetrics {
	m := &fleetMetrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_fleet_calls_total",
			Help: "Fleet call answers, one per cluster a call reached (a refused call counts once), by request name and outcome (ok, or the error code).",
		}, []string{"name", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardvisor_fleet_call_duration_seconds",
			Help:    "Time from a fleet call's arrival at the supervisor to its last answer, by request name.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5},
		}, []string{"name"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardvisor_fleet_calls_in_flight",
			Help: "Fleet calls routed and not yet fully answered.",
		}),
		names: map[string]bool{"shardvisor.stats": true, "shardvisor.guild": true},
	}
	for n := range m.names {
		m.answers.WithLabelValues(n, "ok")
		m.duration.WithLabelValues(n)
	}
	return m
}

func (m *fleetMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.answers, m.duration, m.inFlight)
}

// known adds a name that a cluster serves.
func (m *fleetMetrics) known(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.names) < maxFleetNames {
		m.names[name] = true
	}
}

func (m *fleetMetrics) label(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names[name] {
		return name
	}
	return "other"
}

func (m *fleetMetrics) answered(name string, code wire.FleetCode) {
	outcome := string(code)
	if code == wire.FleetOK {
		outcome = "ok"
	}
	m.answers.WithLabelValues(m.label(name), outcome).Inc()
}

func (m *fleetMetrics) finished(name string, took time.Duration) {
	m.inFlight.Dec()
	m.duration.WithLabelValues(m.label(name)).Observe(took.Seconds())
}
