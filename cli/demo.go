package cli

import (
	"errors"
	"io"

	"github.com/shardvisor/shardvisor/cluster"
)

func runDemo(args []string, bot *cluster.Bot, stdout, stderr io.Writer) error {
	return errors.New("the demo needs discordtest, which is not merged yet")
}
