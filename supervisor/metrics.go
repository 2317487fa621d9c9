package supervisor

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/metrics"
)

var (
	upDesc = prometheus.NewDesc("shardvisor_cluster_up",
		"1 while the cluster's process runs.", []string{"cluster_id"}, nil)
	readyDesc = prometheus.NewDesc("shardvisor_cluster_ready",
		"1 while every shard of the cluster is ready.", []string{"cluster_id"}, nil)
	shardsDesc = prometheus.NewDesc("shardvisor_cluster_shards",
		"Shards of the cluster.", []string{"cluster_id"}, nil)
	shardsReadyDesc = prometheus.NewDesc("shardvisor_cluster_shards_ready",
		"Ready shards of the cluster, as its last report said.", []string{"cluster_id"}, nil)
	restartsDesc = prometheus.NewDesc("shardvisor_cluster_restarts_total",
		"Restarts of the cluster's process, by reason (exit, signal, watchdog, protocol, rolling).", []string{"cluster_id", "reason"}, nil)
	lastExitDesc = prometheus.NewDesc("shardvisor_cluster_last_exit_code",
		"Exit status of the cluster's previous process; -1 when a signal killed it.", []string{"cluster_id"}, nil)
	startTimeDesc = prometheus.NewDesc("shardvisor_cluster_start_time_seconds",
		"Start time of the cluster's current process, in seconds since the epoch.", []string{"cluster_id"}, nil)
	backoffDesc = prometheus.NewDesc("shardvisor_cluster_backoff_seconds",
		"Delay chosen before the cluster's process is started again; 0 while it runs.", []string{"cluster_id"}, nil)
	resumableDesc = prometheus.NewDesc("shardvisor_cluster_resumable_sessions",
		"Sessions the cluster's process last reported as resumable: those a crash would RESUME (-resume-after-crash).", []string{"cluster_id"}, nil)
	supReadyDesc = prometheus.NewDesc("shardvisor_ready",
		"1 when every cluster this supervisor runs is ready.", nil, nil)
	shardCountDesc = prometheus.NewDesc("shardvisor_plan_shards",
		"The bot's shard count: the live fleet's plan.", nil, nil)
	reshardDesc = prometheus.NewDesc("shardvisor_reshard_in_progress",
		"1 while a reshard's next fleet starts in shadow beside the live one.", nil, nil)
	reshardShardsDesc = prometheus.NewDesc("shardvisor_reshard_next_shards",
		"Shards of the next fleet this supervisor runs during a reshard, by state (ready, or not_ready); none when no reshard is under way.", []string{"state"}, nil)
)

// statusCollector exports the status store at scrape time.
type statusCollector struct{ store *Store }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, readyDesc, shardsDesc, shardsReadyDesc, restartsDesc, lastExitDesc, startTimeDesc, backoffDesc, resumableDesc, supReadyDesc,
		shardCountDesc, reshardDesc, reshardShardsDesc} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.store.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(supReadyDesc, b2f(snap.Ready))
	gauge(shardCountDesc, float64(snap.ShardCount))
	gauge(reshardDesc, b2f(snap.Reshard != nil))
	if r := snap.Reshard; r != nil {
		gauge(reshardShardsDesc, float64(r.ShardsReady), "ready")
		gauge(reshardShardsDesc, float64(r.Shards-r.ShardsReady), "not_ready")
	}
	for _, cl := range snap.Clusters {
		id := strconv.Itoa(cl.ID)
		gauge(upDesc, b2f(cl.PID != 0), id)
		gauge(readyDesc, b2f(cl.Ready()), id)
		gauge(shardsDesc, float64(len(cl.Shards)), id)
		gauge(shardsReadyDesc, float64(cl.ShardsReady()), id)
		for _, r := range Reasons {
			ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, float64(cl.RestartsBy[r]), id, string(r))
		}
		if cl.LastExit != nil {
			gauge(lastExitDesc, float64(cl.LastExit.Code), id)
		}
		if cl.PID != 0 {
			gauge(startTimeDesc, float64(cl.StartedAt.UnixNano())/1e9, id)
		}
		gauge(backoffDesc, cl.Backoff.Seconds(), id)
		gauge(resumableDesc, float64(cl.Resumable), id)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RegisterMetrics registers the supervisor's per-cluster metrics with reg:
// the status of each cluster, and each running cluster process's CPU,
// memory and file descriptors read from its pid (as
// shardvisor_cluster_process_*, since the supervisor's own process_* carry
// no cluster_id).
func (s *Supervisor) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(statusCollector{store: s.store}, metrics.NewProcesses(s.pids))
	s.fleet.metrics.register(reg)
	reg.MustRegister(s.reshards.outcomes, s.reshards.took)
	if s.sessions != nil {
		reg.MustRegister(s.sessions.outcomes)
	}
	if s.rest != nil && s.rest.remote != nil {
		reg.MustRegister(s.rest.fallbacks)
	}
}

// pids returns the pid of every cluster whose process runs, by cluster id.
func (s *Supervisor) pids() map[int]int {
	out := map[int]int{}
	for _, r := range s.live().runners {
		if r.channel() == nil {
			continue
		}
		if c, _ := s.store.clusterIn(r.ro.set, r.cluster.ID); c.PID != 0 {
			out[r.cluster.ID] = c.PID
		}
	}
	return out
}

// Children lists the running cluster processes for metrics.Children.
func (s *Supervisor) Children() []metrics.Child {
	var out []metrics.Child
	for _, r := range s.live().runners {
		if ch := r.channel(); ch != nil {
			out = append(out, metrics.Child{ID: r.cluster.ID, Fetch: func(ctx context.Context) ([]byte, error) { return ch.Metrics(ctx) }})
		}
	}
	return out
}
