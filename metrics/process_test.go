package metrics_test

import (
	"os"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardvisor/shardvisor/metrics"
)

// TestProcesses reads this test's own process as cluster 7's, and a pid
// that does not exist as cluster 8's: the families must be those
// client_golang's process collector exports for one process under the
// shardvisor_cluster namespace (names, help, types), each with cluster 7's
// series alone, and the values it reads must be those it reads.
func TestProcesses(t *testing.T) {
	pid := os.Getpid()
	const gonePid = 1 << 30 // above the kernel's pid_max
	reg := prom.NewPedanticRegistry()
	reg.MustRegister(metrics.NewProcesses(func() map[int]int { return map[int]int{7: pid, 8: gonePid} }))
	got, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ref := prom.NewPedanticRegistry()
	prom.WrapRegistererWith(prom.Labels{metrics.Label: "7"}, ref).MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "shardvisor_cluster",
			PidFn: func() (int, error) { return pid, nil }}))
	want, err := ref.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range got {
		byName[mf.GetName()] = mf
	}
	if len(got) != len(want) || len(want) != 9 {
		t.Errorf("%d families, client_golang's collector %d, want 9 each", len(got), len(want))
	}
	for _, w := range want {
		g := byName[w.GetName()]
		if g == nil {
			t.Errorf("%s missing", w.GetName())
			continue
		}
		if g.GetHelp() != w.GetHelp() || g.GetType() != w.GetType() {
			t.Errorf("%s: %s %q, client_golang's collector has %s %q", w.GetName(), g.GetType(), g.GetHelp(), w.GetType(), w.GetHelp())
		}
		if len(g.Metric) != 1 || len(g.Metric[0].Label) != 1 || g.Metric[0].Label[0].GetName() != metrics.Label || g.Metric[0].Label[0].GetValue() != "7" {
			t.Errorf("%s: %v, want cluster 7's series alone", w.GetName(), g.Metric)
			continue
		}
		gv, wv := value(g.Metric[0]), value(w.Metric[0])
		switch w.GetName() {
		case "shardvisor_cluster_process_start_time_seconds", "shardvisor_cluster_process_max_fds", "shardvisor_cluster_process_virtual_memory_max_bytes":
			if gv != wv {
				t.Errorf("%s = %v, client_golang's collector reads %v", w.GetName(), gv, wv)
			}
		case "shardvisor_cluster_process_cpu_seconds_total", "shardvisor_cluster_process_network_receive_bytes_total",
			"shardvisor_cluster_process_network_transmit_bytes_total": // counters, read before the reference
			if gv < 0 || gv > wv {
				t.Errorf("%s = %v, client_golang's collector reads %v just after", w.GetName(), gv, wv)
			}
		default: // gauges that change between the two reads
			if gv <= 0 {
				t.Errorf("%s = %v, want a positive value", w.GetName(), gv)
			}
		}
	}
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
