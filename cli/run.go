package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/metrics"
	"github.com/shardvisor/shardvisor/supervisor"
)

// runFlags are the supervisor's flags.
type runFlags struct {
	log      logFlags
	gateway  gatewayFlags
	bot      botFlags
	shards   string
	perClust int
	clusters int
	ids      string
	share    string
	policy   supervisor.RestartPolicy

	queueURL    string
	queueListen string
	queueSlack  time.Duration

	shutdownTimeout time.Duration
	childWatchdog   time.Duration
	metricsAddr     string
	scrapeTimeout   time.Duration
	reap            string
}

// DefaultMetricsAddr is where the supervisor serves /metrics, /healthz,
// /readyz and /status: loopback only, unless told otherwise.
const DefaultMetricsAddr = "127.0.0.1:9851"

func (f *runFlags) register(fs *flag.FlagSet) {
	f.log.register(fs)
	f.gateway.register(fs)
	f.bot.register(fs)
	fs.StringVar(&f.shards, "shards", "auto", "total shards, or auto for GET /gateway/bot's recommendation")
	fs.IntVar(&f.perClust, "shards-per-cluster", 5, "shards per cluster process (or give -clusters)")
	fs.IntVar(&f.clusters, "clusters", 0, "number of cluster processes, shards spread evenly (instead of -shards-per-cluster)")
	fs.StringVar(&f.ids, "cluster-ids", "", "run only these clusters of the plan, e.g. 2,3 or 0-3 (several machines or containers each run part of one bot)")
	fs.StringVar(&f.share, "cluster-share", "", "run the I-th of N equal shares of the plan's clusters, as I/N (a StatefulSet's pod index over its replicas)")
	fs.StringVar(&f.queueURL, "identify-queue-url", "", "pace IDENTIFYs with the identify queue at this URL (twilight's gateway-queue protocol) instead of a local one: for one bot across machines")
	fs.StringVar(&f.queueListen, "identify-queue-listen", "", "also serve this supervisor's identify queue over HTTP at this address, for supervisors elsewhere (-identify-queue-url)")
	fs.DurationVar(&f.queueSlack, "identify-queue-slack", 0, "with -identify-queue-listen: time a remote caller may take to reach Discord after its grant (dial, TLS, HELLO); 0: 1s")
	fs.DurationVar(&f.policy.Delay, "restart-delay", time.Second, "first delay before a crashed cluster is started again; doubles per consecutive crash")
	fs.DurationVar(&f.policy.MaxDelay, "restart-max-delay", 5*time.Minute, "longest restart delay")
	fs.DurationVar(&f.policy.Stable, "restart-stable", 2*time.Minute, "a cluster up this long has its restart delay reset")
	fs.IntVar(&f.policy.MaxRestarts, "max-restarts", 0, "give up (exit 1) after more than this many restarts of one cluster within -restart-window; 0: never")
	fs.DurationVar(&f.policy.Window, "restart-window", 10*time.Minute, "the window of -max-restarts")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 20*time.Second, "after SIGTERM, how long clusters get to close their sessions before they are killed")
	fs.DurationVar(&f.childWatchdog, "child-watchdog", 30*time.Second, "a cluster silent on its channel this long is killed and restarted")
	fs.StringVar(&f.metricsAddr, "metrics-addr", DefaultMetricsAddr, "address of /metrics, /healthz, /readyz and /status; empty: none")
	fs.DurationVar(&f.scrapeTimeout, "scrape-timeout", 3*time.Second, "how long a scrape waits for the clusters' metrics; a slower cluster is left out of it")
	fs.StringVar(&f.reap, "reap-orphans", "auto", "reap orphaned processes: auto (when running as PID 1), always, never")
}

// clusterArgs are the child's command line: the mode word and the settings
// it shares with the supervisor. The token is not among them.
func (f *runFlags) clusterArgs() []string {
	args := append([]string{"cluster"}, f.log.args()...)
	return append(args, f.gateway.args()...)
}

func runRun(args []string, bot *cluster.Bot, stderr io.Writer) error {
	return runSupervisorMode(args, bot, runEnv{stderr: stderr, getenv: os.LookupEnv})
}

// runEnv is what the supervisor mode takes from its surroundings; the demo
// supplies its own.
type runEnv struct {
	stderr io.Writer
	getenv func(string) (string, bool)
	// started, if set, is called once the supervisor and its HTTP listener
	// exist, before any cluster starts.
	started func(sup *supervisor.Supervisor, addr net.Addr)
}

func runSupervisorMode(args []string, bot *cluster.Bot, env runEnv) error {
	stderr := env.stderr
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var f runFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	clustersSet := false
	fs.Visit(func(fl *flag.Flag) { clustersSet = clustersSet || fl.Name == "clusters" })
	perSet := false
	fs.Visit(func(fl *flag.Flag) { perSet = perSet || fl.Name == "shards-per-cluster" })
	log, err := f.log.logger(stderr)
	if err != nil {
		return err
	}
	gw, err := f.gateway.check()
	if err != nil {
		return err
	}
	if err := f.bot.check(); err != nil {
		return err
	}
	if err := f.policy.Validate(); err != nil {
		return configError(err)
	}
	if f.shutdownTimeout <= 0 || f.childWatchdog <= 0 || f.scrapeTimeout <= 0 {
		return configError(errors.New("-shutdown-timeout, -child-watchdog and -scrape-timeout must be positive"))
	}
	f.policy.Jitter = 0.2
	pc := supervisor.PlanConfig{ShardsPerCluster: f.perClust}
	if clustersSet {
		pc.Clusters, pc.ShardsPerCluster = f.clusters, 0
		if perSet {
			pc.ShardsPerCluster = f.perClust
		}
	}
	if f.ids != "" {
		if pc.ClusterIDs, err = supervisor.ParseIDs("-cluster-ids", f.ids); err != nil {
			return configError(err)
		}
	}
	if f.share != "" {
		if pc.Share, err = supervisor.ParseShare("-cluster-share", f.share); err != nil {
			return configError(err)
		}
	}
	var remote *identify.Remote
	if f.queueURL != "" {
		if f.queueListen != "" {
			return configError(errors.New("-identify-queue-url and -identify-queue-listen both set: a supervisor serves its own queue, or uses another's"))
		}
		if remote, err = identify.NewRemote(f.queueURL, nil, log.With("component", "identify")); err != nil {
			return configError(fmt.Errorf("-identify-queue-url: %w", err))
		}
	}
	auto := f.shards == "auto"
	if !auto {
		if pc.Shards, err = strconv.Atoi(f.shards); err != nil {
			return configError(fmt.Errorf("-shards %q: a number of shards, or auto", f.shards))
		}
	}
	reapAlways, reapAuto := f.reap == "always", f.reap == "auto"
	if !reapAlways && !reapAuto && f.reap != "never" {
		return configError(fmt.Errorf("-reap-orphans %q: want auto, always or never", f.reap))
	}

	token, err := f.bot.token(env.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api := discordapi.New(token, cluster.HTTPClient(gw.apiURL))
	maxConc := f.bot.maxConcurrency
	if remote != nil && maxConc == 0 {
		maxConc = 1 // the remote queue knows the buckets; the children are not told
	}
	var gb *discordapi.GatewayBot
	if auto || maxConc == 0 {
		g, err := api.GatewayBot(ctx)
		if err != nil {
			return restError(fmt.Errorf("plan shards: %w", err))
		}
		gb = &g
		if auto {
			pc.Shards = gb.Shards
		}
		if maxConc == 0 {
			maxConc = gb.MaxConcurrency
		}
		log.Info("gateway/bot", "recommended_shards", gb.Shards, "max_concurrency", gb.MaxConcurrency,
			"session_starts_remaining", gb.Budget.Remaining, "session_start_limit", gb.Budget.Total)
	}
	plan, err := supervisor.NewPlan(pc)
	if err != nil {
		return configError(err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
	var (
		queue    *identify.Queue
		acquirer identify.Acquirer = remote
		factor   func() float64
	)
	if remote == nil {
		if queue, err = localQueue(maxConc, gb, f.bot.identifyInterval, log.With("component", "identify"), reg); err != nil {
			return err
		}
		acquirer, factor = queue, queue.BackoffFactor
	}

	var reaper *supervisor.Reaper
	if reapAlways || (reapAuto && os.Getpid() == 1) {
		reaper = supervisor.NewReaper(log.With("component", "reaper"))
	}
	sup, err := supervisor.New(supervisor.Config{
		Plan:            plan,
		Launcher:        &supervisor.ExecLauncher{Args: f.clusterArgs(), Reaper: reaper},
		Policy:          f.policy,
		ShutdownTimeout: f.shutdownTimeout,
		ChildWatchdog:   f.childWatchdog,
		Token:           token,
		MaxConcurrency:  maxConc,
		Queue:           acquirer,
		BudgetFactor:    factor,
	}, log)
	if err != nil {
		return configError(err)
	}
	sup.RegisterMetrics(reg)
	children := metrics.NewChildren(sup.Children, f.scrapeTimeout, log.With("component", "metrics"), reg)
	metricsHandler := metrics.ShareResponses(promhttp.HandlerFor(metrics.Shared(prometheus.Gatherers{reg, children}),
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}), reg)

	var ln, queueLn net.Listener
	if f.metricsAddr != "" {
		if ln, err = net.Listen("tcp", f.metricsAddr); err != nil {
			return fmt.Errorf("listen on -metrics-addr: %w", err)
		}
	}
	if f.queueListen != "" {
		if queueLn, err = net.Listen("tcp", f.queueListen); err != nil {
			return fmt.Errorf("listen on -identify-queue-listen: %w", err)
		}
	}
	log.Info("supervisor starting", "shards", plan.ShardCount, "clusters", len(plan.Clusters), "of", plan.Total,
		"max_concurrency", maxConc, "identify_interval", f.bot.identifyInterval, "metrics_addr", f.metricsAddr,
		"identify_queue", cmp.Or(f.queueURL, "local"), "identify_queue_listen", f.queueListen)

	if plan.Clusters[0].ID == 0 {
		if err := f.bot.registerBotCommands(ctx, api, bot, log); err != nil {
			return err
		}
	}
	if env.started != nil {
		var addr net.Addr
		if ln != nil {
			addr = ln.Addr()
		}
		env.started(sup, addr)
	}
	servers := []server{}
	if ln != nil {
		servers = append(servers, server{ln, sup.Handler(metricsHandler)})
	}
	if queueLn != nil {
		servers = append(servers, server{queueLn, identify.Handler(queue, cmp.Or(f.queueSlack, identify.DefaultSlack), log.With("component", "identify"))})
	}
	err = runSupervisor(ctx, sup, queue, api, reaper, servers, log)
	if remote != nil {
		remote.Wait() // identify reports still on their way to the queue
	}
	return err
}

// server is an HTTP handler to serve on a listener.
type server struct {
	ln net.Listener
	h  http.Handler
}

// add serves s in g until g stops.
func (s server) add(g *run.Group, log *slog.Logger) {
	srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	g.Add(func() error {
		if err := srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", s.ln.Addr(), err)
		}
		return nil
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
}

// runSupervisor composes the supervisor's components in a run.Group.
func runSupervisor(ctx context.Context, sup *supervisor.Supervisor, queue *identify.Queue, api *discordapi.Client,
	reaper *supervisor.Reaper, servers []server, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g run.Group
	g.Add(func() error { return sup.Run(context.Background()) }, func(error) { sup.Stop() })
	{ // signals: SIGTERM/SIGINT stop (a second one kills), SIGHUP rolls
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		quit := make(chan struct{})
		g.Add(func() error {
			stops := 0
			for {
				select {
				case s := <-sigs:
					if s == syscall.SIGHUP {
						log.Info("SIGHUP: rolling restart")
						sup.RollingRestart()
						continue
					}
					stops++
					if stops == 1 {
						log.Info("stopping", "signal", s.String())
						sup.Stop()
					} else {
						log.Warn("second stop signal: killing every cluster now", "signal", s.String())
						sup.Hurry()
					}
				case <-quit:
					return nil
				}
			}
		}, func(error) { signal.Stop(sigs); close(quit) })
	}
	notifier := supervisor.NewNotifier(sup, log.With("component", "systemd"))
	g.Add(func() error { return notifier.Run(ctx) }, func(error) { cancel() })
	if queue != nil {
		g.Add(func() error { return queue.RefreshBudget(ctx, api.Budget, 10*time.Minute) }, func(error) { cancel() })
	}
	if reaper != nil {
		g.Add(func() error { return reaper.Run(ctx, 5*time.Second) }, func(error) { cancel() })
	}
	for _, srv := range servers {
		srv.add(&g, log)
	}
	err := g.Run()
	var fe *supervisor.FatalError
	if errors.As(err, &fe) {
		return configError(err)
	}
	return err
}
