package supervisor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/shardvisor/shardvisor/internal/field"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Cluster is one cluster of a plan: a contiguous range of shard ids run by
// one process.
type Cluster struct {
	ID     int
	Shards []int
}

// Plan groups a bot's shards into clusters.
type Plan struct {
	// ShardCount is the bot's total number of shards.
	ShardCount int
	// Total is the number of clusters in the whole plan.
	Total int
	// Clusters are the clusters this supervisor runs: all of them, or those
	// chosen with -cluster-ids when several machines share one bot.
	Clusters []Cluster
}

// PlanConfig is what the flags say about the plan. Exactly one of
// ShardsPerCluster and Clusters is set.
type PlanConfig struct {
	Shards           int
	ShardsPerCluster int
	Clusters         int
	ClusterIDs       []int // nil: every cluster
	// Share, if its Count is set, chooses one of Count contiguous shares of
	// the clusters: a StatefulSet's pods each run the share of their index.
	Share Share
}

// Share is the Index-th of Count shares (-cluster-share I/N).
type Share struct{ Index, Count int }

// ParseShare parses "I/N" for the flag name.
func ParseShare(name, s string) (Share, error) {
	i, n, ok := strings.Cut(s, "/")
	idx, err1 := strconv.Atoi(strings.TrimSpace(i))
	cnt, err2 := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err1 != nil || err2 != nil || cnt < 1 || idx < 0 || idx >= cnt {
		return Share{}, fmt.Errorf("%s %q: want I/N with 0 <= I < N, e.g. 2/4 for the third of four shares", name, s)
	}
	return Share{Index: idx, Count: cnt}, nil
}

// Fields of PlanConfig, as its errors name them (see package field).
const (
	fieldShards           = "PlanConfig.Shards"
	fieldShardsPerCluster = "PlanConfig.ShardsPerCluster"
	fieldClusters         = "PlanConfig.Clusters"
	fieldClusterIDs       = "PlanConfig.ClusterIDs"
	fieldShare            = "PlanConfig.Share"
)

// NewPlan splits Shards into contiguous ranges: ShardsPerCluster each (the
// last one may be smaller), or Clusters ranges whose sizes differ by at most
// one. Contiguous ranges put consecutive shard ids, and so different
// identify buckets, in each cluster: a cluster's shards come up in parallel.
// It is where every check of a plan's shape is made: 1 to wire.MaxShardID
// shards, at most wire.MaxShardsInMsg in one cluster, chosen clusters in
// the plan. Errors are *field.Error naming the PlanConfig field at fault.
func NewPlan(c PlanConfig) (Plan, error) {
	if c.Shards < 1 {
		return Plan{}, field.New(fieldShards, fmt.Sprintf("%d shards; a bot has at least 1", c.Shards))
	}
	if c.Shards > wire.MaxShardID {
		return Plan{}, field.New(fieldShards, fmt.Sprintf("%d shards; must be between 1 and %d", c.Shards, wire.MaxShardID))
	}
	var sizes []int
	sizedBy := fieldShardsPerCluster
	switch {
	case c.ShardsPerCluster > 0 && c.Clusters > 0:
		return Plan{}, field.New(fieldClusters, "both set with "+fieldShardsPerCluster+": give one of them", fieldShardsPerCluster)
	case c.Clusters > 0:
		sizedBy = fieldClusters
		if c.Clusters > c.Shards {
			return Plan{}, field.New(fieldClusters, fmt.Sprintf("%d clusters for %d shards; every cluster needs at least one shard", c.Clusters, c.Shards))
		}
		for i := range c.Clusters {
			n := c.Shards / c.Clusters
			if i < c.Shards%c.Clusters {
				n++
			}
			sizes = append(sizes, n)
		}
	case c.ShardsPerCluster > 0:
		for left := c.Shards; left > 0; left -= c.ShardsPerCluster {
			sizes = append(sizes, min(left, c.ShardsPerCluster))
		}
	case c.Clusters < 0:
		return Plan{}, field.New(fieldClusters, fmt.Sprintf("%d; must be at least 1", c.Clusters))
	default:
		return Plan{}, field.New(fieldShardsPerCluster, fmt.Sprintf("%d; must be at least 1", c.ShardsPerCluster))
	}
	if sizes[0] > wire.MaxShardsInMsg { // the first cluster is the largest
		return Plan{}, field.New(sizedBy, fmt.Sprintf("%d shards in one cluster; a cluster runs at most %d", sizes[0], wire.MaxShardsInMsg))
	}
	p := Plan{ShardCount: c.Shards, Total: len(sizes)}
	next := 0
	all := make([]Cluster, len(sizes))
	for i, n := range sizes {
		all[i] = Cluster{ID: i}
		for range n {
			all[i].Shards = append(all[i].Shards, next)
			next++
		}
	}
	if c.Share.Count > 0 {
		if c.ClusterIDs != nil {
			return Plan{}, field.New(fieldClusterIDs, "both set with "+fieldShare+": give one of them", fieldShare)
		}
		if c.Share.Count > len(all) {
			return Plan{}, field.New(fieldShare, fmt.Sprintf("%d/%d: %d shares of %d clusters would leave some empty", c.Share.Index, c.Share.Count, c.Share.Count, len(all)))
		}
		lo := c.Share.Index * len(all) / c.Share.Count
		hi := (c.Share.Index + 1) * len(all) / c.Share.Count
		p.Clusters = all[lo:hi]
		return p, nil
	}
	if c.ClusterIDs == nil {
		p.Clusters = all
		return p, nil
	}
	if len(c.ClusterIDs) == 0 {
		return Plan{}, field.New(fieldClusterIDs, "empty list")
	}
	seen := map[int]bool{}
	for _, id := range c.ClusterIDs {
		if id < 0 || id >= len(all) {
			return Plan{}, field.New(fieldClusterIDs, fmt.Sprintf("cluster %d is not in the plan (clusters 0-%d for %d shards)", id, len(all)-1, c.Shards))
		}
		if seen[id] {
			return Plan{}, field.New(fieldClusterIDs, fmt.Sprintf("cluster %d listed twice", id))
		}
		seen[id] = true
		p.Clusters = append(p.Clusters, all[id])
	}
	slices.SortFunc(p.Clusters, func(a, b Cluster) int { return a.ID - b.ID })
	return p, nil
}

// ParseIDs parses a comma-separated list of non-negative integers such as
// "2,3" or "0-3,7" (ranges inclusive). name is used in errors.
func ParseIDs(name, s string) ([]int, error) {
	var ids []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("%s %q: empty element", name, s)
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%s %q: %q is not a non-negative integer", name, s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("%s %q: bad range %q", name, s, part)
			}
		}
		if b-a > 1<<20 {
			return nil, fmt.Errorf("%s %q: range %q too large", name, s, part)
		}
		for i := a; i <= b; i++ {
			ids = append(ids, i)
		}
	}
	return ids, nil
}

// FormatIDs is the inverse of ParseIDs for a plain list: "15,16,17".
func FormatIDs(ids []int) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(id))
	}
	return b.String()
}

// FormatRanges writes sorted ids compactly: "0-4,7".
func FormatRanges(ids []int) string {
	var b strings.Builder
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ids[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(ids[j]))
		}
		i = j + 1
	}
	return b.String()
}
