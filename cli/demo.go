package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// runDemo is a newcomer's first run: no token, no internet. A fake Discord
// runs in this process with thousands of guilds; the real supervisor runs
// real cluster processes against it. It shows the shards coming up per
// cluster, sends /ping now and then and shows the replies (and, when the
// bot has them, /stats and /shard, answered through fleet calls between
// the clusters), and stops everything cleanly on Ctrl-C.
func runDemo(args []string, bot *cluster.Bot, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	guilds := fs.Int("guilds", 5000, "guilds in the fake Discord")
	shards := fs.Int("shards", 16, "shards the fake Discord recommends")
	perCluster := fs.Int("shards-per-cluster", 4, "shards per cluster process")
	maxConc := fs.Int("max-concurrency", 4, "the fake Discord's identify concurrency")
	interval := fs.Duration("identify-interval", 200*time.Millisecond, "the fake Discord's identify interval (Discord's is 5 s)")
	pingEvery := fs.Duration("ping-every", 3*time.Second, "send a command (/ping, /shard, /stats in turn) this often")
	metricsAddr := fs.String("metrics-addr", DefaultMetricsAddr, "the supervisor's -metrics-addr (another free port is used if it is taken)")
	verbose := fs.Bool("v", false, "show the supervisor's and the clusters' logs")
	// The demo shows the defaults: it reads no SHARDVISOR_* variable, for
	// its own flags, the supervisor's or (removed from their environment)
	// the clusters'. Its only variable is the fake's token.
	var token string
	env := runEnv{
		stderr: stderr,
		getenv: func(k string) (string, bool) {
			if k == "DISCORD_TOKEN" && token != "" {
				return token, true
			}
			return "", false
		},
		childEnv: func() []string { return withoutFlagVars(os.Environ(), new(clusterFlags).flagSet()) },
	}
	if err := parse(fs, args, env.getenv); err != nil {
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

	sessionDir, err := os.MkdirTemp("", "shardvisor-demo-sessions-")
	if err != nil {
		return fmt.Errorf("make the demo's session dir: %w", err)
	}
	defer os.RemoveAll(sessionDir)
	runArgs := []string{"-api-url", fake.URL(), "-shards", "auto", "-shards-per-cluster", fmt.Sprint(*perCluster),
		"-identify-interval", interval.String(), "-metrics-addr", *metricsAddr, "-log-level", level,
		"-restart-delay", "200ms", "-invalid-session-wait", "1s", "-resume-after-crash", "-session-dir", sessionDir}
	token = fake.Token()
	// SIGUSR1 stops the supervisor as SIGTERM would and starts a new one,
	// as systemctl restart does: the sessions kept in the session dir.
	restart := make(chan os.Signal, 1)
	signal.Notify(restart, syscall.SIGUSR1)
	defer signal.Stop(restart)
	// SIGUSR2: the bot grows; the fake recommends twice the shards, and the
	// supervisor reshards beside the running fleet (as ctl reshard).
	grow := make(chan os.Signal, 1)
	signal.Notify(grow, syscall.SIGUSR2)
	defer signal.Stop(grow)
	var began time.Time // of the restart: its SIGUSR1
	for run := 0; ; run++ {
		var (
			wg        sync.WaitGroup
			stop      = make(chan struct{})
			restarted atomic.Bool
		)
		env.started = func(sup *supervisor.Supervisor, addr net.Addr) {
			if run == 0 {
				if addr != nil {
					fmt.Fprintf(stdout, "status page: http://%s/   metrics: http://%s/metrics   (or: shardvisor status -addr %s)\n", addr, addr, addr)
				}
				fmt.Fprintln(stdout, "Ctrl-C stops everything cleanly.")
				fmt.Fprintf(stdout, "kill -HUP %d rolls the clusters: each hands its sessions and State over, RESUMEs, and spends no IDENTIFY.\n", os.Getpid())
				fmt.Fprintf(stdout, "kill -USR1 %d restarts the whole supervisor (as systemctl restart): the sessions are kept in -session-dir and RESUMEd.\n", os.Getpid())
				fmt.Fprintln(stdout, "kill -9 of a cluster process (pids on the status page): its replacement RESUMEs its sessions (-resume-after-crash), with an empty cache.")
				fmt.Fprintf(stdout, "kill -USR2 %d makes the bot grow: the fake recommends twice the shards and the supervisor reshards while the bot stays online (as shardvisor ctl reshard).\n", os.Getpid())
			}
			if run > 0 {
				wg.Add(1)
				go func() { defer wg.Done(); showRestarted(stdout, sup, fake, began, stop) }()
			}
			wg.Add(3)
			go func() { defer wg.Done(); showDemo(stdout, sup, fake, demoCommands(bot), *pingEvery, stop) }()
			go func() { defer wg.Done(); demoReshards(stdout, sup, fake, grow, stop) }()
			go func() {
				defer wg.Done()
				select {
				case <-restart:
					began = time.Now() // read by the next run, after wg.Wait
					restarted.Store(true)
					fmt.Fprintln(stdout, "SIGUSR1: stopping the supervisor and starting it again; every shard's session goes to the session dir")
					sup.Stop()
				case <-stop:
				}
			}()
		}
		err = runSupervisorMode(runArgs, bot, env)
		close(stop)
		wg.Wait()
		if err != nil || !restarted.Load() {
			break
		}
	}
	if err == nil {
		r := fake.Record()
		fmt.Fprintf(stdout, "stopped cleanly: %d sessions (%d IDENTIFYs, %d RESUMEs), %d interactions answered\n",
			len(r.Sessions), len(r.Identifies), len(r.Resumes), len(r.Interactions))
	}
	return err
}

// demoReshards answers each SIGUSR2 until stop: the fake recommends twice
// the running shards, the supervisor reshards to that, and once it has
// switched the demo says how long it took, what it spent, and whether any
// guild was ever without a live session.
func demoReshards(w io.Writer, sup *supervisor.Supervisor, fake *discordtest.Server, grow <-chan os.Signal, stop <-chan struct{}) {
	for {
		select {
		case <-grow:
		case <-stop:
			return
		}
		store := sup.Store()
		from := store.Snapshot().ShardCount
		if err := fake.SetRecommendedShards(2 * from); err != nil {
			fmt.Fprintf(w, "SIGUSR2: %v\n", err)
			continue
		}
		began, before := time.Now(), len(fake.Record().Identifies)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := sup.Reshard(ctx, supervisor.ReshardAuto, fmt.Sprintf("demo: SIGUSR2, the fake Discord now recommends %d shards", 2*from))
		cancel()
		if err != nil {
			fmt.Fprintf(w, "SIGUSR2: %v\n", err)
			continue
		}
		fmt.Fprintf(w, "SIGUSR2: the fake Discord recommends %d shards; resharding %d → %d in %d clusters beside the running fleet, which goes on serving\n",
			2*from, st.From, st.To, len(st.Clusters))
		for {
			changed := store.Changed()
			snap := store.Snapshot()
			if snap.Reshard == nil && snap.Ready {
				if snap.ShardCount != st.To {
					fmt.Fprintf(w, "reshard abandoned: still %d shards (the events on the status page say why)\n", snap.ShardCount)
					break
				}
				gaps := fake.Uncovered(began, time.Now())
				fmt.Fprintf(w, "resharded: %d → %d shards, switched %v after SIGUSR2, %d IDENTIFYs; guilds without a live session meanwhile: %d\n",
					st.From, st.To, time.Since(began).Round(time.Millisecond), len(fake.Record().Identifies)-before, len(gaps))
				break
			}
			select {
			case <-changed:
			case <-stop:
				return
			}
		}
	}
}

// showRestarted says, once the new supervisor is ready, what its shards
// did since the restart began (the old supervisor's stop included).
func showRestarted(w io.Writer, sup *supervisor.Supervisor, fake *discordtest.Server, began time.Time, stop <-chan struct{}) {
	store := sup.Store()
	for {
		changed := store.Changed()
		if store.Snapshot().Ready {
			break
		}
		select {
		case <-changed:
		case <-stop:
			return
		}
	}
	r := fake.Record()
	resumes, identifies := 0, 0
	for _, rr := range r.Resumes {
		if rr.At.After(began) && rr.Outcome == discordtest.OutcomeResumed {
			resumes++
		}
	}
	for _, ir := range r.Identifies {
		if ir.At.After(began) {
			identifies++
		}
	}
	fmt.Fprintf(w, "restarted: every shard ready again %v after SIGUSR1: %d RESUMEs, %d IDENTIFYs\n",
		time.Since(began).Round(time.Millisecond), resumes, identifies)
}

// demoCommands are the commands the demo sends, in turn: those of /ping,
// /shard and /stats the bot has.
func demoCommands(bot *cluster.Bot) []string {
	var out []string
	for _, c := range []string{"ping", "shard", "stats"} {
		if slices.Contains(bot.CommandNames(), c) {
			out = append(out, c)
		}
	}
	return out
}

// showDemo prints each cluster's progress as it changes; once every shard
// is ready, the answers of each command once, then of one command in turn
// every pingEvery, until stop.
func showDemo(w io.Writer, sup *supervisor.Supervisor, fake *discordtest.Server, cmds []string, pingEvery time.Duration, stop <-chan struct{}) {
	start := time.Now()
	store := sup.Store()
	shown := map[int]string{}
	allReady := false
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	guilds := fake.GuildIDs()
	send := func(cmd string) {
		guild := guilds[rand.IntN(len(guilds))]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: cmd})
		cancel()
		if err != nil {
			fmt.Fprintf(w, "%7s  /%s in guild %s: no reply (%v)\n", since(start), cmd, guild, err)
			return
		}
		content := fmt.Sprintf(" %q", rep.Content)
		if strings.Contains(rep.Content, "\n") {
			content = "\n           " + strings.ReplaceAll(rep.Content, "\n", "\n           ")
		}
		fmt.Fprintf(w, "%7s  /%s in guild %s, answered in %v:%s\n", since(start), cmd, guild, rep.Latency.Round(100*time.Microsecond), content)
	}
	next := 0
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
			fmt.Fprintf(w, "%7s  all %d shards ready in %d clusters, in %v; sending /%s in turn every %v\n",
				since(start), snap.Shards, len(snap.Clusters), time.Since(start).Round(time.Millisecond), strings.Join(cmds, ", /"), pingEvery)
			if len(guilds) > 0 {
				for _, c := range cmds {
					send(c)
				}
			}
		}
		select {
		case <-stop:
			return
		case <-changed:
		case <-ping.C:
			if !allReady || stopping || len(guilds) == 0 || len(cmds) == 0 {
				continue
			}
			send(cmds[next%len(cmds)])
			next++
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
