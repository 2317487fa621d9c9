package cli

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// TestRunEndToEnd takes one deployment through its life: start from flags
// and environment, ready, /ping answered, metrics per cluster, a cluster
// killed with -9 and replaced, a rolling restart on SIGHUP, and a stop on
// SIGTERM that closes every session; the token never shows anywhere.
func TestRunEndToEnd(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 120, Shards: 8, MaxConcurrency: 2})
	addr := freeAddr(t)
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_SHARDS_PER_CLUSTER=2"},
		append([]string{"run", "-shards", "auto"}, fastFlags(fake, addr)...)...)

	began := time.Now()
	snap := p.until(t, "ready", ready)
	t.Logf("8 shards in 4 clusters ready %v after start", time.Since(began).Round(time.Millisecond))
	if len(snap.Clusters) != 4 || snap.ShardCount != 8 {
		t.Fatalf("plan from SHARDVISOR_SHARDS_PER_CLUSTER=2 and -shards auto: %d clusters, %d shards", len(snap.Clusters), snap.ShardCount)
	}
	if code, body, _ := p.get("/readyz"); code != 200 || !strings.Contains(body, "8/8 shards ready, 4/4 clusters") {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if code, _, _ := p.get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}

	// The status table and the health check, as an operator runs them.
	out, code := command(t, nil, "status", "-addr", addr)
	if code != 0 || !strings.Contains(out, "READY  8/8 shards ready, 4/4 clusters") || !strings.Contains(out, "0-1") {
		t.Errorf("shardvisor status: exit %d\n%s", code, out)
	}
	t.Logf("shardvisor status:\n%s", out)
	if out, code := command(t, nil, "healthcheck", "-addr", addr); code != 0 {
		t.Errorf("shardvisor healthcheck while ready: exit %d: %s", code, out)
	}

	// /ping in a guild of every shard, and in a DM.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for shard := range 8 {
		g := fake.GuildIDsOf(shard, 8)[0]
		if rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: g, Command: "ping"}); err != nil || rep.Content != "Pong!" {
			t.Errorf("/ping on shard %d: %+v, %v", shard, rep, err)
		}
	}
	if rep, err := fake.Interact(ctx, discordtest.Interaction{Command: "ping"}); err != nil || rep.Content != "Pong!" {
		t.Errorf("/ping in a DM: %+v, %v", rep, err)
	}
	if n := fake.Record().RESTCalls("PUT applications/{app}/commands", 200); n != 1 {
		t.Errorf("commands registered %d times; once per bot start, not once per cluster", n)
	}

	checkMetrics(t, p)

	// Nothing shows the token: argv and environment of every process, the
	// HTTP endpoints, the logs.
	for _, c := range snap.Clusters {
		for _, f := range []string{"cmdline", "environ"} {
			noLeak(t, "cluster "+strconv.Itoa(c.ID)+"'s "+f, procFile(c.PID, f))
		}
	}
	noLeak(t, "the supervisor's argv", procFile(p.cmd.Process.Pid, "cmdline"))
	for _, path := range []string{"/status", "/metrics"} {
		_, body, _ := p.get(path)
		noLeak(t, path, body)
	}

	// kill -9 of a cluster: replaced after the restart delay, its shards
	// identify again through the queue.
	victim := snap.Clusters[1]
	killed := time.Now()
	syscall.Kill(victim.PID, syscall.SIGKILL)
	after := p.until(t, "cluster 1 replaced and ready", func(s supervisor.Snapshot) bool {
		return s.Clusters[1].Generation == 2 && s.Ready
	})
	t.Logf("cluster 1 killed -9 and its 2 shards ready again in %v", time.Since(killed).Round(time.Millisecond))
	if c := after.Clusters[1]; c.RestartsBy[supervisor.ReasonSignal] != 1 || c.LastExit.Signal != "killed" {
		t.Errorf("after kill -9: restarts %v last exit %+v", c.RestartsBy, c.LastExit)
	}

	// SIGHUP: every cluster replaced, one at a time, each ready again.
	p.signal(t, syscall.SIGHUP)
	rolled := p.until(t, "rolling restart done", func(s supervisor.Snapshot) bool {
		for _, c := range s.Clusters {
			if c.RestartsBy[supervisor.ReasonRolling] != 1 {
				return false
			}
		}
		return s.Ready
	})
	for i, c := range rolled.Clusters {
		if c.PID == after.Clusters[i].PID {
			t.Errorf("cluster %d kept pid %d through the rolling restart", c.ID, c.PID)
		}
	}

	// SIGTERM: every cluster closes its sessions; exit 0.
	stopping := time.Now()
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	t.Logf("stop of 4 clusters took %v", time.Since(stopping).Round(time.Millisecond))
	r, err := fake.WaitFor(ctx, func(r discordtest.Record) bool {
		for _, s := range r.Sessions {
			if s.Alive() {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range r.Sessions {
		if s.End.After(stopping) && (s.CloseCode != 1000 || s.ClosedBy != discordtest.ClosedByClient) {
			t.Errorf("at the stop, the session of shard %d ended with %d by %s; want 1000 by the client", s.Shard, s.CloseCode, s.ClosedBy)
		}
	}
	checkPacing(t, r)
	logs := p.out.String()
	noLeak(t, "the logs", logs)
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "every shard ready") && !strings.Contains(line, "cluster_id=") {
			t.Errorf("a cluster's log line without cluster_id: %s", line)
		}
	}
}

// metrics reads and parses the supervisor's /metrics.
func (p *proc) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, err := p.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// checkMetrics reads /metrics and checks that every cluster's series are
// there under cluster_id, beside the supervisor's own.
func checkMetrics(t *testing.T, p *proc) {
	t.Helper()
	fams := p.metrics(t)
	perCluster := func(name string) map[string]bool {
		ids := map[string]bool{}
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cluster_id" {
					ids[l.GetValue()] = true
				}
			}
		}
		return ids
	}
	for _, name := range []string{"shardvisor_cluster_up", "shardvisor_cluster_ready", "shardvisor_cluster_restarts_total",
		"shardvisor_cluster_process_resident_memory_bytes", "shardvisor_cluster_process_cpu_seconds_total",
		"shardvisor_cluster_process_open_fds", "shardvisor_shard_state", "shardvisor_shard_guilds",
		"shardvisor_shard_heartbeat_latency_seconds", "shardvisor_gateway_events_total", "go_goroutines"} {
		if ids := perCluster(name); len(ids) != 4 {
			t.Errorf("%s has series for clusters %v, want all 4", name, ids)
		}
	}
	for _, name := range []string{"shardvisor_build_info", "shardvisor_identify_grants_total", "shardvisor_session_starts_remaining",
		"shardvisor_ready", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

// TestStormsAcrossClusters is the identify queue's proof across processes:
// while every shard of four cluster processes is sent INVALID_SESSION
// again and again, RECONNECT, and two clusters are killed and restarted, no
// two IDENTIFYs of one bucket come closer than the interval, and no shard
// ever has two live sessions.
func TestStormsAcrossClusters(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 64, Shards: 8, MaxConcurrency: 2})
	addr := freeAddr(t)
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "8", "-clusters", "4"}, fastFlags(fake, addr)...)...)
	p.until(t, "ready", ready)
	identified := func(n int) func(discordtest.Record) bool {
		return func(r discordtest.Record) bool { return r.Identified(-1, discordtest.OutcomeReady) >= n }
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	base := fake.Record().Identified(-1, discordtest.OutcomeReady)
	for round := range 3 {
		for shard := range 8 {
			fake.InvalidSession(shard, false)
		}
		if _, err := fake.WaitFor(ctx, identified(base+8*(round+1))); err != nil {
			t.Fatalf("round %d: every shard identified again: %v", round, err)
		}
	}
	for shard := range 8 {
		fake.Reconnect(shard)
	}
	snap := p.until(t, "ready after the storms", ready)
	syscall.Kill(snap.Clusters[0].PID, syscall.SIGKILL)
	syscall.Kill(snap.Clusters[3].PID, syscall.SIGKILL)
	p.until(t, "ready after two clusters were killed", func(s supervisor.Snapshot) bool {
		return s.Ready && s.Clusters[0].Generation == 2 && s.Clusters[3].Generation == 2
	})
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	checkPacing(t, fake.Record())
}
