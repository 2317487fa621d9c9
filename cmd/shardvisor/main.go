// Command shardvisor runs a sharded Discord bot as supervised cluster
// processes; this build's bot answers /ping, and /stats and /shard through
// fleet calls between its clusters. See the README, or
// `shardvisor help`.
package main

import (
	"github.com/shardvisor/shardvisor/cli"
	"github.com/shardvisor/shardvisor/cluster"
)

func main() {
	bot := cluster.NewBot()
	bot.Command(cluster.Ping())
	bot.Command(cluster.StatsCommand())
	bot.Command(cluster.ShardCommand())
	cli.Main(bot)
}
