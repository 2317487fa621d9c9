package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/shardvisor/shardvisor/supervisor"
)

// runGuild prints where a guild is: its shard and cluster, whether that
// shard is ready, and what the cluster has of it (a fleet call, through
// the supervisor's GET /fleet/guilds/{id}).
func runGuild(args []string, stdout io.Writer, getenv lookupEnv) error {
	fs := flag.NewFlagSet("guild", flag.ContinueOnError)
	addr := addrFlag(fs, getenv)
	// The id comes first or last: shardvisor guild ID [-addr A], or
	// shardvisor guild [-addr A] ID.
	var id string
	switch {
	case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
		id, args = args[0], args[1:]
	case len(args) > 0 && isDigits(args[len(args)-1]):
		id, args = args[len(args)-1], args[:len(args)-1]
	}
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if !isDigits(id) {
		return configError(fmt.Errorf("want a guild id: shardvisor guild ID [-addr A]"))
	}
	var g supervisor.FleetGuild
	if err := getJSON("http://"+*addr+"/fleet/guilds/"+id, &g); err != nil {
		return err
	}
	WriteGuild(stdout, g)
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// WriteGuild writes a guild lookup as an operator reads it.
func WriteGuild(w io.Writer, g supervisor.FleetGuild) {
	cluster := fmt.Sprint(g.ClusterID)
	if g.ClusterID < 0 {
		cluster = "run by another supervisor"
	}
	ready := "not ready"
	if g.ShardReady {
		ready = "ready"
	}
	fmt.Fprintf(w, "guild %s: shard %d (%s), cluster %s\n", g.GuildID, g.Shard, ready, cluster)
	if g.Answer.Code != "" {
		fmt.Fprintf(w, "the cluster did not answer: %s: %s\n", g.Answer.Code, g.Answer.Error)
		return
	}
	var info struct {
		Cached      bool   `json:"cached"`
		Name        string `json:"name"`
		MemberCount int    `json:"member_count"`
	}
	if err := json.Unmarshal(g.Answer.Data, &info); err != nil {
		fmt.Fprintf(w, "the cluster's answer does not decode: %v\n", err)
		return
	}
	if !info.Cached {
		fmt.Fprintln(w, "not in the cluster's cache: the bot is not in that guild, or it is unavailable")
		return
	}
	fmt.Fprintf(w, "cached: %q, %d members\n", info.Name, info.MemberCount)
}
