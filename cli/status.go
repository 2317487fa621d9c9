package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
	"github.com/shardvisor/shardvisor/supervisor"
)

// runStatus prints the supervisor's status as a table an operator reads at
// a glance.
func runStatus(args []string, stdout io.Writer, getenv lookupEnv) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	addr := addrFlag(fs, getenv)
	shards := fs.Bool("shards", false, "list every shard, not only those that are not ready")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	var snap supervisor.Snapshot
	if err := getJSON("http://"+*addr+"/status", &snap); err != nil {
		return err
	}
	WriteStatus(stdout, snap, *shards)
	return nil
}

// runHealthcheck exits 0 only when the supervisor is ready: a container
// HEALTHCHECK without a shell or curl in the image.
func runHealthcheck(args []string, getenv lookupEnv) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	addr := addrFlag(fs, getenv)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the supervisor: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(body)))
	}
	return nil
}

// addrFlag is -addr of the modes that ask a running supervisor.
func addrFlag(fs *flag.FlagSet, getenv lookupEnv) *string {
	return fs.String("addr", localAddr(getenv.get), "the supervisor's -metrics-addr (default: $SHARDVISOR_METRICS_ADDR, on loopback)")
}

// localAddr is where status and healthcheck find the supervisor by
// default: the -metrics-addr the environment gives it (so that a container
// that moves the port needs no change to its health check), on loopback if
// it listens on every address.
func localAddr(getenv func(string) string) string {
	addr := getenv(envPrefix + "_METRICS_ADDR")
	if addr == "" {
		return DefaultMetricsAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr // let the request say what is wrong with it
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

func getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the supervisor (is it running, with this -metrics-addr?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	return nil
}

// WriteStatus writes snap as tables: one line per cluster, then the shards
// that are not ready (all of them with allShards). During a reshard it
// also writes the reshard's line and, after the live fleet's, the next
// fleet's clusters (in shadow: they serve nothing until the switch) in
// the same form, and their shards with allShards.
func WriteStatus(w io.Writer, snap supervisor.Snapshot, allShards bool) {
	ready := "NOT READY"
	if snap.Ready {
		ready = "READY"
	}
	fmt.Fprintf(w, "%s  %s  (%d shards in the bot, %d clusters in the plan)\n", ready, snap.Summary(), snap.ShardCount, snap.PlanClusters)
	r := snap.Reshard
	if r != nil {
		fmt.Fprintf(w, "RESHARD  %d → %d shards (%s): %s, %d/%d new shards ready, started %s ago\n",
			r.From, r.To, r.Reason, r.Phase, r.ShardsReady, r.Shards, fmtDuration(snap.Time.Sub(r.Started)))
	}
	fmt.Fprintln(w)
	shards := writeClusters(w, snap.Time, snap.Clusters, allShards)
	writeShards(w, snap.Time, "SHARD", shards)
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\nNEXT FLEET (shadow, live at the switch): %d shards in %d clusters\n", r.To, len(r.Clusters))
	shards = writeClusters(w, snap.Time, r.Clusters, allShards)
	if allShards {
		writeShards(w, snap.Time, "NEXT SHARD", shards)
	}
}

// writeClusters writes one line per cluster and returns the shards that
// are not ready (all of them with allShards).
func writeClusters(w io.Writer, now time.Time, clusters []supervisor.ClusterStatus, allShards bool) []wire.ShardStatus {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tSTATE\tPID\tUPTIME\tSHARDS\tREADY\tGUILDS\tLATENCY\tRESTARTS\tLAST EXIT")
	var notReady []wire.ShardStatus
	for _, c := range clusters {
		uptime, guilds, lat, n := "-", 0, time.Duration(0), 0
		if c.PID != 0 {
			uptime = fmtDuration(now.Sub(c.StartedAt))
		}
		for _, s := range c.ShardState {
			guilds += s.Guilds
			if s.State == wire.ShardReady {
				lat += s.Latency
				n++
			}
			if allShards || s.State != wire.ShardReady {
				notReady = append(notReady, s)
			}
		}
		latency := "-"
		if n > 0 {
			latency = (lat / time.Duration(n)).Round(time.Millisecond).String()
		}
		pid, last := "-", "-"
		if c.PID != 0 {
			pid = fmt.Sprint(c.PID)
		}
		if c.LastExit != nil {
			last = fmt.Sprintf("%s (%s) %s ago", c.LastExit.Status, c.LastExit.Reason, fmtDuration(now.Sub(c.LastExit.At)))
		}
		state := string(c.State)
		if c.State == supervisor.ClusterBackoff {
			state += " " + fmtDuration(c.NextStart.Sub(now))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%d\t%s\n", c.ID, state, pid, uptime,
			supervisor.FormatRanges(c.Shards), c.ShardsReady(), len(c.Shards), guilds, latency, c.Restarts, last)
	}
	tw.Flush()
	return notReady
}

// writeShards writes one line per shard, by id, under a header whose first
// column is first; nothing when there are none.
func writeShards(w io.Writer, now time.Time, first string, shards []wire.ShardStatus) {
	if len(shards) == 0 {
		return
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].ID < shards[j].ID })
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, first+"\tSTATE\tFOR\tGUILDS\tLATENCY\tLAST IDENTIFY")
	for _, s := range shards {
		since, last := "-", "-"
		if !s.Since.IsZero() {
			since = fmtDuration(now.Sub(s.Since))
		}
		if !s.LastIdentify.IsZero() {
			last = fmtDuration(now.Sub(s.LastIdentify)) + " ago"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.State, since, s.Guilds, s.Latency.Round(time.Millisecond), last)
	}
	tw.Flush()
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
