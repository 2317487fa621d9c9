package cluster

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// Identity is which shards a cluster process runs, from its environment.
type Identity struct {
	ClusterID  int
	ShardIDs   []int
	ShardCount int
}

// IdentityFromEnv reads and checks SHARDVISOR_CLUSTER_ID,
// SHARDVISOR_SHARD_IDS and SHARDVISOR_SHARD_COUNT. The error names the
// variable and what is wrong with it, in one line.
func IdentityFromEnv(getenv func(string) string) (Identity, error) {
	var id Identity
	num := func(name string, lo int) (int, error) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return 0, fmt.Errorf("%s is not set (a cluster is started by `shardvisor run`, or by hand with SHARDVISOR_CLUSTER_ID, SHARDVISOR_SHARD_IDS and SHARDVISOR_SHARD_COUNT)", name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > wire.MaxShardID {
			return 0, fmt.Errorf("%s=%q: want an integer from %d to %d", name, v, lo, wire.MaxShardID)
		}
		return n, nil
	}
	var err error
	if id.ClusterID, err = num(wire.EnvClusterID, 0); err != nil {
		return id, err
	}
	if id.ShardCount, err = num(wire.EnvShardCount, 1); err != nil {
		return id, err
	}
	raw := strings.TrimSpace(getenv(wire.EnvShardIDs))
	if raw == "" {
		return id, fmt.Errorf("%s is not set: the comma-separated shard ids this cluster runs", wire.EnvShardIDs)
	}
	seen := map[int]bool{}
	for part := range strings.SplitSeq(raw, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return id, fmt.Errorf("%s=%q: %q is not a shard id", wire.EnvShardIDs, raw, part)
		}
		if n < 0 || n >= id.ShardCount {
			return id, fmt.Errorf("%s=%q: shard %d out of range for %s=%d", wire.EnvShardIDs, raw, n, wire.EnvShardCount, id.ShardCount)
		}
		if seen[n] {
			return id, fmt.Errorf("%s=%q: shard %d listed twice", wire.EnvShardIDs, raw, n)
		}
		seen[n] = true
		id.ShardIDs = append(id.ShardIDs, n)
	}
	if len(id.ShardIDs) > wire.MaxShardsInMsg {
		return id, fmt.Errorf("%s: %d shards in one cluster; at most %d", wire.EnvShardIDs, len(id.ShardIDs), wire.MaxShardsInMsg)
	}
	return id, nil
}
