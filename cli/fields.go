package cli

import (
	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/field"
)

// flagFor names the flag that sets a library's field, for the libraries'
// *field.Error: the one table from the libraries' words to the command
// line's. A field no flag sets keeps its own name.
func flagFor(f string) string {
	switch f {
	case "PlanConfig.Shards":
		return "-shards"
	case "PlanConfig.ShardsPerCluster":
		return "-shards-per-cluster"
	case "PlanConfig.Clusters":
		return "-clusters"
	case "PlanConfig.ClusterIDs":
		return "-cluster-ids"
	case "PlanConfig.Share":
		return "-cluster-share"
	case "RestartPolicy.Delay":
		return "-restart-delay"
	case "RestartPolicy.MaxDelay":
		return "-restart-max-delay"
	case "RestartPolicy.Stable":
		return "-restart-stable"
	case "RestartPolicy.MaxRestarts":
		return "-max-restarts"
	case "RestartPolicy.Window":
		return "-restart-window"
	case "Config.ShutdownTimeout":
		return "-shutdown-timeout"
	case "Config.ChildWatchdog":
		return "-child-watchdog"
	case "Config.REST":
		return "-rest-shared-limits"
	case "Config.RemoteREST":
		return "-rest-limits-url"
	case cluster.FieldIntents:
		return "-intents"
	case cluster.FieldCache:
		return "-state-cache"
	}
	return f
}

// flagMessage is err's message with the fields it names spelled as flags.
func flagMessage(err error) (string, bool) { return field.Rename(err, flagFor) }
