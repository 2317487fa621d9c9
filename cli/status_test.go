package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
	"github.com/shardvisor/shardvisor/supervisor"
)

// fleetOf is a fleet of clusters of perCluster shards each out of shards,
// as a status shows it: started at start, the first ready ready shards
// ready, the others connecting.
func fleetOf(shards, perCluster, ready int, start time.Time) []supervisor.ClusterStatus {
	var out []supervisor.ClusterStatus
	for id := 0; id*perCluster < shards; id++ {
		c := supervisor.ClusterStatus{ID: id, State: supervisor.ClusterReady, PID: 1000 + id, Generation: 1, StartedAt: start}
		for s := id * perCluster; s < (id+1)*perCluster; s++ {
			c.Shards = append(c.Shards, s)
			st := wire.ShardStatus{ID: s, State: wire.ShardReady, Since: start, Latency: 40 * time.Millisecond, Guilds: 10}
			if s >= ready {
				c.State = supervisor.ClusterStarting
				st = wire.ShardStatus{ID: s, State: wire.ShardConnecting, Since: start}
			}
			c.ShardState = append(c.ShardState, st)
		}
		out = append(out, c)
	}
	return out
}

// TestWriteStatus: the table of `shardvisor status` and `ctl status`,
// without a reshard and with one under way: then a line for the reshard
// and its next fleet's clusters after the live ones, marked as the next
// fleet in shadow, and its shards only with -shards (their ids overlap
// the live fleet's).
func TestWriteStatus(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	live := supervisor.Snapshot{Time: now, Ready: true, ShardCount: 8, PlanClusters: 4, Shards: 8, ShardsReady: 8, ClustersReady: 4,
		Clusters: fleetOf(8, 2, 8, now.Add(-time.Hour))}
	resharding := live
	resharding.Reshard = &supervisor.ReshardStatus{From: 8, To: 16, Reason: "asked by uid 0", Phase: supervisor.ReshardStarting,
		Started: now.Add(-12 * time.Second), Shards: 16, ShardsReady: 10, Clusters: fleetOf(16, 2, 10, now.Add(-12*time.Second))}

	for _, tc := range []struct {
		name      string
		snap      supervisor.Snapshot
		allShards bool
		want      []string // lines, in this order, each a prefix of a line (spaces squeezed)
		not       []string // in no line
	}{
		{name: "no reshard", snap: live,
			want: []string{"READY 8/8 shards ready, 4/4 clusters (8 shards in the bot, 4 clusters in the plan)", "CLUSTER STATE PID UPTIME SHARDS READY",
				"0 ready 1000 1h0m0s 0-1 2/2 20 40ms 0 -", "3 ready 1003 1h0m0s 6-7 2/2 20 40ms 0 -"},
			not: []string{"RESHARD", "NEXT", "SHARD STATE"}},
		{name: "no reshard, every shard", snap: live, allShards: true,
			want: []string{"READY", "3 ready", "SHARD STATE FOR GUILDS", "0 ready 1h0m0s 10 40ms -", "7 ready"},
			not:  []string{"RESHARD", "NEXT"}},
		{name: "reshard under way", snap: resharding,
			want: []string{"READY 8/8 shards ready, 4/4 clusters",
				"RESHARD 8 → 16 shards (asked by uid 0): starting, 10/16 new shards ready, started 12s ago",
				"CLUSTER STATE", "0 ready 1000 1h0m0s 0-1 2/2", "3 ready 1003 1h0m0s 6-7 2/2",
				"NEXT FLEET (shadow, live at the switch): 16 shards in 8 clusters",
				"CLUSTER STATE PID UPTIME SHARDS READY", "0 ready 1000 12s 0-1 2/2 20 40ms 0 -", "4 ready 1004 12s 8-9 2/2",
				"5 starting 1005 12s 10-11 0/2 0 - 0 -", "7 starting 1007 12s 14-15 0/2"},
			not: []string{"SHARD STATE", "NEXT SHARD"}},
		{name: "reshard under way, every shard", snap: resharding, allShards: true,
			want: []string{"RESHARD 8 → 16", "3 ready 1003", "SHARD STATE", "7 ready 1h0m0s", "NEXT FLEET", "7 starting 1007",
				"NEXT SHARD STATE FOR GUILDS", "0 ready 12s 10 40ms -", "10 connecting 12s 0 0s -", "15 connecting"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			WriteStatus(&b, tc.snap, tc.allShards)
			out := b.String()
			var lines []string
			for l := range strings.Lines(out) {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
			i := 0
			for _, w := range tc.want {
				for i < len(lines) && !strings.HasPrefix(lines[i], w) {
					i++
				}
				if i == len(lines) {
					t.Fatalf("no line %q (in this order) in:\n%s", w, out)
				}
				i++
			}
			for _, n := range tc.not {
				for _, l := range lines {
					if strings.HasPrefix(l, n) {
						t.Errorf("line %q, want none beginning %q, in:\n%s", l, n, out)
					}
				}
			}
		})
	}
}
