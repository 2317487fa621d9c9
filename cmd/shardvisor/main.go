// Command shardvisor runs a sharded Discord bot as supervised cluster
// processes; this build's bot answers /ping. See the README, or
// `shardvisor help`.
package main

import (
	"github.com/shardvisor/shardvisor/cli"
	"github.com/shardvisor/shardvisor/cluster"
)

func main() {
	bot := cluster.NewBot()
	bot.Command(cluster.Ping())
	cli.Main(bot)
}
