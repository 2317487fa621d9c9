package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// runDemo is a newcomer's first run: no token, no internet. A fake Discord
// runs in this process with thousands of guilds; the real supervisor runs
// real cluster processes against it. It shows the shards coming up per
// cluster, sends /ping now and then and shows the replies, and stops
// everything cleanly on Ctrl-C.
func runDemo(args []string, bot *cluster.Bot, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	guilds := fs.Int("guilds", 5000, "guilds in the fake Discord")
	shards := fs.Int("shards", 16, "shards the fake Discord recommends")
	perCluster := fs.Int("shards-per-cluster", 4, "shards per cluster process")
	maxConc := fs.Int("max-concurrency", 4, "the fake Discord's identify concurrency")
	interval := fs.Duration("identify-interval", 200*time.Millisecond, "the fake Discord's identify interval (Discord's is 5 s)")
	pingEvery := fs.Duration("ping-every", 3*time.Second, "send /ping this often")
	metricsAddr := fs.String("metrics-addr", DefaultMetricsAddr, "the supervisor's -metrics-addr (another free port is used if it is taken)")
	verbose := fs.Bool("v", false, "show the supervisor's and the clusters' logs")
	if err := parse(fs, args); err != nil {
		return err
	}
	fake, err := discordtest.NewServer(discordtest.Options{
		Guilds: *guilds, Shards: *shards, MaxConcurrency: *maxConc, IdentifyInterval: *interval,
		ChannelsPerGuild: 5, RolesPerGuild: 5, MembersPerGuild: 5, HeartbeatInterval: 5 * time.Second,
		IdentifyTolerance: *interval / 10,
	})
	if err != nil {
		return fmt.Errorf("start the fake Discord: %w", err)
	}
	defer fake.Close()
	if ln, err := net.Listen("tcp", *metricsAddr); err != nil {
		*metricsAddr = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	level := "warn"
	if *verbose {
		level = "info"
	}
	fmt.Fprintf(stdout, "shardvisor demo: a fake Discord with %d guilds at %s (recommends %d shards, max_concurrency %d, one IDENTIFY per bucket per %v)\n",
		*guilds, fake.URL(), *shards, *maxConc, *interval)

	runArgs := []string{"-api-url", fake.URL(), "-shards", "auto", "-shards-per-cluster", fmt.Sprint(*perCluster),
		"-identify-interval", interval.String(), "-metrics-addr", *metricsAddr, "-log-level", level,
		"-restart-delay", "200ms", "-invalid-session-wait", "1s"}
	token := fake.Token()
	env := runEnv{
		stderr: stderr,
		getenv: func(k string) (string, bool) {
			if k == "DISCORD_TOKEN" {
				return token, true
			}
			return "", false // the demo ignores SHARDVISOR_* variables: it shows the defaults
		},
	}
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	env.started = func(sup *supervisor.Supervisor, addr net.Addr) {
		if addr != nil {
			fmt.Fprintf(stdout, "metrics: http://%s/metrics   status: http://%s/status   (or: shardvisor status -addr %s)\n", addr, addr, addr)
		}
		fmt.Fprintln(stdout, "Ctrl-C stops everything cleanly.")
		fmt.Fprintf(stdout, "kill -HUP %d rolls the clusters: each hands its sessions and State over, RESUMEs, and spends no IDENTIFY.\n", os.Getpid())
		wg.Add(1)
		go func() { defer wg.Done(); showDemo(stdout, sup, fake, *pingEvery, stop) }()
	}
	err = runSupervisorMode(runArgs, bot, env)
	close(stop)
	wg.Wait()
	if err == nil {
		r := fake.Record()
		fmt.Fprintf(stdout, "stopped cleanly: %d sessions closed (%d IDENTIFYs, %d RESUMEs), %d interactions answered\n",
			len(r.Sessions), len(r.Identifies), len(r.Resumes), len(r.Interactions))
	}
	return err
}

// showDemo prints each cluster's progress as it changes, then a /ping now
// and then, until stop.
func showDemo(w io.Writer, sup *supervisor.Supervisor, fake *discordtest.Server, pingEvery time.Duration, stop <-chan struct{}) {
	start := time.Now()
	store := sup.Store()
	shown := map[int]string{}
	allReady := false
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	guilds := fake.GuildIDs()
	for {
		changed := store.Changed()
		snap := store.Snapshot()
		stopping := false
		for _, c := range snap.Clusters {
			stopping = stopping || c.State == supervisor.ClusterStopping
			if c.Generation == 0 {
				continue // not started yet
			}
			if line := clusterLine(c); line != shown[c.ID] {
				shown[c.ID] = line
				fmt.Fprintf(w, "%7s  %s\n", since(start), line)
			}
		}
		if snap.Ready && !allReady {
			allReady = true
			fmt.Fprintf(w, "%7s  all %d shards ready in %d clusters, in %v; sending /ping every %v\n",
				since(start), snap.Shards, len(snap.Clusters), time.Since(start).Round(time.Millisecond), pingEvery)
		}
		select {
		case <-stop:
			return
		case <-changed:
		case <-ping.C:
			if !allReady || stopping || len(guilds) == 0 {
				continue
			}
			guild := guilds[rand.IntN(len(guilds))]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: "ping"})
			cancel()
			if err != nil {
				fmt.Fprintf(w, "%7s  /ping in guild %s: no reply (%v)\n", since(start), guild, err)
				continue
			}
			fmt.Fprintf(w, "%7s  /ping in guild %s: %q in %v\n", since(start), guild, rep.Content, rep.Latency.Round(100*time.Microsecond))
		}
	}
}

// clusterLine is a cluster's progress bar: "cluster 2  [###-]  3/4 ready  pid 4242".
func clusterLine(c supervisor.ClusterStatus) string {
	ready := c.ShardsReady()
	bar := strings.Repeat("#", ready) + strings.Repeat("-", len(c.Shards)-ready)
	line := fmt.Sprintf("cluster %d  [%s]  %d/%d ready  %s", c.ID, bar, ready, len(c.Shards), c.State)
	if c.PID != 0 {
		line += fmt.Sprintf("  pid %d", c.PID)
	}
	return line
}

func since(t time.Time) string {
	return fmt.Sprintf("%.1fs", time.Since(t).Seconds())
}
