package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"
)

// commandFleetTimeout leaves a slash command's fleet call time to reply
// within Discord's three seconds.
const commandFleetTimeout = 2 * time.Second

// StatsCommand is the /stats command: guilds, shards and clusters of the
// whole bot, and each cluster's heartbeat latency, from a broadcast of
// StatsRequest. A cluster that does not answer is listed with the reason.
func StatsCommand() (*discordgo.ApplicationCommand, CommandFunc) {
	return &discordgo.ApplicationCommand{Name: "stats", Description: "Guilds, shards and clusters of the whole bot"},
		func(i *Interaction) error {
			ctx, cancel := context.WithTimeout(i.Context, commandFleetTimeout)
			defer cancel()
			answers, err := i.Fleet().Broadcast(ctx, StatsRequest, nil)
			if err != nil {
				return errors.Join(err, i.Reply("Stats are not available right now."))
			}
			return i.Reply(FormatStats(answers))
		}
}

// FormatStats is /stats's text for a broadcast of StatsRequest.
func FormatStats(answers []Answer) string {
	stats, _ := Decode[Stats](answers)
	var guilds, shards, ready int
	for _, s := range stats {
		guilds, shards, ready = guilds+s.Guilds, shards+s.Shards, ready+s.ShardsReady
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d guilds · %d/%d shards ready · %d/%d clusters answered", guilds, ready, shards, len(stats), len(answers))
	for _, a := range answers {
		s, ok := stats[a.ClusterID]
		switch {
		case ok:
			fmt.Fprintf(&b, "\ncluster %d: %d guilds, %d/%d shards ready, latency %s", a.ClusterID, s.Guilds, s.ShardsReady, s.Shards, formatLatency(s.Latency))
		case a.Err != nil:
			fmt.Fprintf(&b, "\ncluster %d: %s", a.ClusterID, shortReason(a.Err))
		}
	}
	return b.String()
}

// formatLatency is a heartbeat round trip for people: "n/a" before the
// first, microseconds against a local fake, milliseconds on Discord.
func formatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "n/a"
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// shortReason is a fleet error without the call's name, for users.
func shortReason(err error) string {
	var fe *FleetError
	if errors.As(err, &fe) {
		return fmt.Sprintf("%s (%s)", fe.Code, fe.Message)
	}
	return err.Error()
}

// ShardCommand is the /shard command: "this server is on shard N, cluster
// M", as the cluster that has the guild says (GuildRequest).
func ShardCommand() (*discordgo.ApplicationCommand, CommandFunc) {
	return &discordgo.ApplicationCommand{Name: "shard", Description: "Which shard and cluster this server is on"},
		func(i *Interaction) error {
			if i.GuildID == "" {
				return i.Reply("Direct messages are on shard 0.")
			}
			ctx, cancel := context.WithTimeout(i.Context, commandFleetTimeout)
			defer cancel()
			g, err := i.Fleet().Guild(ctx, i.GuildID)
			if err != nil {
				return errors.Join(err, i.Reply("Cannot tell right now: "+shortReason(err)))
			}
			return i.Reply(fmt.Sprintf("This server is on shard %d, cluster %d.", g.Shard, g.ClusterID))
		}
}
