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
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/sessiondir"
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
	handoff         bool
	resumeCrash     bool
	sessionDir      string
	sessionWindow   time.Duration
	restShared      bool
	restGlobal      int
	restLimitsURL   string
	autoReshard     bool
	metricsAddr     string
	scrapeTimeout   time.Duration
	scrapeReuse     time.Duration
	reap            string
	controlSocket   string
	fleet           fleetFlags
}

// DefaultMetricsAddr is where the supervisor serves /metrics, /healthz,
// /readyz and /status: loopback only, unless told otherwise.
const DefaultMetricsAddr = "127.0.0.1:9851"

func (f *runFlags) register(fs *flag.FlagSet) {
	f.policy = supervisor.DefaultRestartPolicy()
	f.log.register(fs)
	f.gateway.register(fs)
	f.bot.register(fs)
	f.fleet.register(fs)
	fs.StringVar(&f.shards, "shards", "auto", "total shards, or auto for GET /gateway/bot's recommendation")
	fs.IntVar(&f.perClust, "shards-per-cluster", 5, "shards per cluster process (or give -clusters)")
	fs.IntVar(&f.clusters, "clusters", 0, "number of cluster processes, shards spread evenly (instead of -shards-per-cluster)")
	fs.StringVar(&f.ids, "cluster-ids", "", "run only these clusters of the plan, e.g. 2,3 or 0-3 (several machines or containers each run part of one bot)")
	fs.StringVar(&f.share, "cluster-share", "", "run the I-th of N equal shares of the plan's clusters, as I/N (a StatefulSet's pod index over its replicas)")
	fs.StringVar(&f.queueURL, "identify-queue-url", "", "pace IDENTIFYs with the identify queue at this URL (twilight's gateway-queue protocol) instead of a local one: for one bot across machines")
	fs.StringVar(&f.queueListen, "identify-queue-listen", "", "also serve this supervisor's identify queue over HTTP at this address, for supervisors elsewhere (-identify-queue-url)")
	fs.DurationVar(&f.queueSlack, "identify-queue-slack", 0, "with -identify-queue-listen: time a remote caller may take to reach Discord after its grant (dial, TLS, HELLO); 0: 1s")
	fs.DurationVar(&f.policy.Delay, "restart-delay", f.policy.Delay, "first delay before a crashed cluster is started again; doubles per consecutive crash")
	fs.DurationVar(&f.policy.MaxDelay, "restart-max-delay", f.policy.MaxDelay, "longest restart delay")
	fs.DurationVar(&f.policy.Stable, "restart-stable", f.policy.Stable, "a cluster up this long has its restart delay reset")
	fs.IntVar(&f.policy.MaxRestarts, "max-restarts", f.policy.MaxRestarts, "give up (exit 1) after more than this many restarts of one cluster within -restart-window; 0: never")
	fs.DurationVar(&f.policy.Window, "restart-window", f.policy.Window, "the window of -max-restarts")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 20*time.Second, "after SIGTERM, how long clusters get to close their sessions before they are killed")
	fs.DurationVar(&f.childWatchdog, "child-watchdog", 30*time.Second, "a cluster silent on its channel this long is killed and restarted")
	fs.BoolVar(&f.handoff, "rolling-handoff", true, "a rolling restart hands each shard's session and State to the new process, which RESUMEs; false: close and IDENTIFY again")
	fs.BoolVar(&f.resumeCrash, "resume-after-crash", false, "the process that replaces a crashed cluster RESUMEs its sessions from their last report (about once a second) instead of identifying: no session starts spent, but the cache starts empty and the events of up to a second before the crash arrive twice (at least once)")
	fs.StringVar(&f.sessionDir, "session-dir", "", "keep every shard's session and cache in this directory at a stop, and RESUME them at the next start instead of identifying (records are 0600, sealed with a key derived from the token); empty: a stop closes the sessions")
	fs.DurationVar(&f.sessionWindow, "session-resume-window", time.Minute, "with -session-dir: a record older than this is discarded and its shard identifies (Discord keeps a dropped session only briefly and does not say how long)")
	fs.BoolVar(&f.restShared, "rest-shared-limits", true, "the supervisor holds the bot's REST rate limits (the global limit, every bucket, the invalid-request count) for every cluster, which asks it for a ticket before each request; false: each cluster limits only its own requests")
	fs.BoolVar(&f.autoReshard, "auto-reshard", false, "reshard while the bot stays online when Discord recommends more shards than run (checked at start and hourly) or closes a shard with 4011 (sharding required), instead of exiting 78; the new shards start beside the old ones and take over once ready (also: shardvisor ctl reshard)")
	fs.IntVar(&f.restGlobal, "rest-global-limit", 50, "the bot's global REST limit, requests per second (Discord's default; larger bots are granted more)")
	fs.StringVar(&f.restLimitsURL, "rest-limits-url", "", "take the clusters' REST tickets from the REST limits service at this URL (shardvisor identify-queue serves one), shared by the supervisors on several machines; while it does not answer, this supervisor's own limits (-rest-global-limit); needs -rest-shared-limits")
	fs.StringVar(&f.metricsAddr, "metrics-addr", DefaultMetricsAddr, "address of /metrics, /healthz, /readyz and /status; empty: none")
	fs.DurationVar(&f.scrapeTimeout, "scrape-timeout", 3*time.Second, "how long a scrape waits for the clusters' metrics; a slower cluster is left out of it")
	fs.DurationVar(&f.scrapeReuse, "scrape-reuse", 500*time.Millisecond, "a scrape of /metrics that comes this soon after an identical one began gets that one's answer instead of asking the clusters again; at most 1s, below the shortest scrape interval; 0: never")
	fs.StringVar(&f.reap, "reap-orphans", "auto", "reap orphaned processes: auto (when running as PID 1), always, never")
	fs.StringVar(&f.controlSocket, "control-socket", controlSocketAuto, "unix socket (mode 0660) for shardvisor ctl: status, roll, restart CLUSTER, reshard [N|auto]; auto: $RUNTIME_DIRECTORY/control.sock when systemd gives RUNTIME_DIRECTORY, else none; empty: none")
}

// clusterArgs are the child's command line: the mode word and the settings
// it shares with the supervisor. The token is not among them.
func (f *runFlags) clusterArgs() []string {
	args := append([]string{"cluster"}, f.log.args()...)
	return append(args, f.gateway.args()...)
}

// runEnv is what the supervisor mode takes from its surroundings; the demo
// supplies its own.
type runEnv struct {
	stderr io.Writer
	getenv lookupEnv
	// childEnv, if set, is the environment cluster processes start from;
	// nil: this process's (supervisor.ExecLauncher's default).
	childEnv func() []string
	// started, if set, is called once the supervisor and its HTTP listener
	// exist, before any cluster starts.
	started func(sup *supervisor.Supervisor, addr net.Addr)
}

// runSupervisorMode is the run mode in four steps: the flags checked into
// a config, the startup calls to Discord, the components built, and run.
// Signals are taken from before the startup calls on: a SIGTERM while
// they wait stops the process cleanly, a SIGHUP is ignored.
func runSupervisorMode(args []string, bot *cluster.Bot, env runEnv) error {
	cfg, err := supervisorConfig(args, env)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	startCtx, startDone := startupSignals(ctx, sigs, cfg.log)
	st, err := cfg.startup(startCtx, bot)
	if stopped := startDone(); stopped {
		cfg.log.Info("stopped during startup; no cluster was started")
		return nil
	}
	if err != nil {
		return err
	}
	c, err := cfg.build(st, env)
	if err != nil {
		return err
	}
	err = runSupervisor(ctx, c, sigs, cfg.log)
	if cfg.remote != nil {
		cfg.remote.Wait() // identify reports still on their way to the queue
	}
	if cfg.restRemote != nil {
		cfg.restRemote.Close()
	}
	return err
}

// startupSignals handles signals while the startup calls run: SIGTERM or
// SIGINT cancels the returned context, SIGHUP is logged and ignored. done
// stops the handling and reports whether a stop signal came.
func startupSignals(ctx context.Context, sigs <-chan os.Signal, log *slog.Logger) (context.Context, func() bool) {
	ctx, cancel := context.WithCancel(ctx)
	quit, exited := make(chan struct{}), make(chan bool)
	go func() {
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGHUP {
					log.Info("SIGHUP during startup: no cluster runs yet, nothing to roll")
					continue
				}
				log.Info("stopping during startup", "signal", s.String())
				cancel()
				<-quit
				exited <- true
				return
			case <-quit:
				exited <- false
				return
			}
		}
	}()
	return ctx, func() bool {
		close(quit)
		stopped := <-exited
		cancel()
		return stopped
	}
}

// startup is what the supervisor learns from Discord before it builds
// anything: the gateway facts (nil with a remote queue and every fact
// given) and the plan.
type startup struct {
	api      *discordapi.Client
	gb       *discordapi.GatewayBot
	plan     supervisor.Plan
	maxConc  int
	userID   string          // the bot's user id, asked only for -session-dir
	sessions *sessiondir.Dir // -session-dir, bound to the plan; nil without
}

// startup asks GET /gateway/bot when the plan or the local queue needs it,
// plans the clusters and checks the plan against what Discord and this
// machine allow, then registers the bot's commands (cluster 0's host).
func (cfg *supervisorCfg) startup(ctx context.Context, bot *cluster.Bot) (startup, error) {
	f, log := &cfg.flags, cfg.log
	st := startup{api: discordapi.New(cfg.token, cluster.HTTPClient(cfg.gw.apiURL)), maxConc: f.bot.maxConcurrency}
	if cfg.remote != nil && st.maxConc == 0 {
		st.maxConc = 1 // the remote queue knows the buckets; the children are not told
	}
	pc := cfg.plan
	if cfg.autoShards || st.maxConc == 0 || cfg.remote == nil || f.autoReshard {
		g, err := st.api.GatewayBot(ctx)
		if err != nil {
			return st, restError(fmt.Errorf("plan shards: %w", err))
		}
		st.gb = &g
		if cfg.autoShards {
			pc.Shards = g.Shards
		}
		if st.maxConc == 0 {
			st.maxConc = g.MaxConcurrency
		}
		log.Info("gateway/bot", "recommended_shards", g.Shards, "max_concurrency", g.MaxConcurrency,
			"session_starts_remaining", g.Budget.Remaining, "session_start_limit", g.Budget.Total)
	}
	var budget *identify.Budget
	if st.gb != nil && cfg.remote == nil {
		budget = &st.gb.Budget
	}
	if f.sessionDir != "" {
		id, err := st.api.UserID(ctx)
		if err != nil {
			return st, restError(fmt.Errorf("-session-dir: learn the bot's user id: %w", err))
		}
		st.userID = id
		b := sessiondir.Binding{UserID: id, ShardCount: max(pc.Shards, 1), Token: cfg.token}
		if st.sessions, err = sessiondir.Open(f.sessionDir, b, f.sessionWindow); err != nil {
			return st, configError(fmt.Errorf("-session-dir %q: %w", f.sessionDir, err))
		}
	}
	if n := cfg.remembered(st, pc.Shards); n > pc.Shards {
		pc.Shards, cfg.planned = n, nil
	}
	var plan supervisor.Plan
	if cfg.planned != nil { // planned and checked against this machine with the flags: only the budget is new
		plan = *cfg.planned
		if err := checkPlanLimits(plan, cfg.clustersBy, budget, machine{}, log); err != nil {
			return st, err
		}
	} else {
		var err error
		if plan, err = supervisor.NewPlan(pc); err != nil {
			return st, configError(err)
		}
		if err := checkPlanLimits(plan, cfg.clustersBy, budget, hostLimits(), log); err != nil {
			return st, err
		}
	}
	st.plan = plan
	if st.sessions != nil {
		st.sessions.Rebind(plan.ShardCount)
	}
	if plan.Clusters[0].ID == 0 {
		if err := f.bot.registerBotCommands(ctx, st.api, bot, log); err != nil {
			return st, err
		}
	}
	return st, nil
}

// components are the supervisor's parts, built and ready to run.
type components struct {
	sup     *supervisor.Supervisor
	queue   *identify.Queue // nil with a remote queue
	reaper  *supervisor.Reaper
	servers []server
	control *supervisor.ControlListener // nil: no control socket
}

// build makes the registry, the identify queue, the supervisor and its
// listeners. On an error, what it opened is closed again.
func (cfg *supervisorCfg) build(st startup, env runEnv) (_ *components, err error) {
	f, log := &cfg.flags, cfg.log
	reg := newRegistry(true)
	c := &components{}
	var (
		acquirer identify.Acquirer = cfg.remote
		factor   func() float64
		stats    func() identify.Stats
	)
	if cfg.remote == nil {
		if c.queue, err = localQueue(st.maxConc, st.gb, st.api, f.bot.queueFlags, log.With("component", "identify"), reg); err != nil {
			return nil, err
		}
		acquirer, factor, stats = c.queue, c.queue.BackoffFactor, c.queue.Stats
	}
	if cfg.reapAlways || (cfg.reapAuto && os.Getpid() == 1) {
		c.reaper = supervisor.NewReaper(log.With("component", "reaper"))
	}
	peers, fleetSecret, err := f.fleet.load(env.getenv)
	if err != nil {
		return nil, err
	}
	var (
		rest       *ratelimit.Limiter
		restRemote supervisor.RemoteREST
	)
	if f.restShared {
		if rest, err = ratelimit.New(ratelimit.Config{Global: f.restGlobal, Logger: log.With("component", "rest")}, reg); err != nil {
			return nil, configError(fmt.Errorf("-rest-global-limit: %w", err))
		}
	}
	if cfg.restRemote != nil {
		cfg.restRemote.RegisterMetrics(reg)
		restRemote = cfg.restRemote
	}
	sessions := st.sessions
	c.sup, err = supervisor.New(supervisor.Config{
		Plan:             st.plan,
		Launcher:         &supervisor.ExecLauncher{Args: f.clusterArgs(), Environ: env.childEnv, Reaper: c.reaper},
		Policy:           f.policy,
		ShutdownTimeout:  f.shutdownTimeout,
		ChildWatchdog:    f.childWatchdog,
		NoHandoff:        !f.handoff,
		ResumeAfterCrash: f.resumeCrash,
		Sessions:         sessions,
		REST:             rest,
		RemoteREST:       restRemote,
		Token:            cfg.token,
		Queue:            acquirer,
		BudgetFactor:     factor,
		QueueStats:       stats,
		Peers:            peers,
		FleetSecret:      fleetSecret,
		Split:            cfg.plan,
		GatewayBot:       gatewayBotFunc(st.api),
		CheckPlan: func(p supervisor.Plan) error {
			return checkPlanLimits(p, cfg.clustersBy, nil, hostLimits(), log)
		},
		AutoReshard: f.autoReshard,
		OnReshard:   cfg.rememberPlan(sessions),
	}, log)
	if err != nil {
		return nil, configError(err)
	}
	c.sup.RegisterMetrics(reg)
	children := metrics.NewChildren(c.sup.Children, f.scrapeTimeout, log.With("component", "metrics"), reg)
	metricsHandler := metrics.ShareResponses(promhttp.HandlerFor(metrics.Shared(metrics.Concurrent(reg, children)),
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}), f.scrapeReuse, reg)

	defer func() {
		if err != nil {
			for _, s := range c.servers {
				s.ln.Close()
			}
			if c.control != nil {
				c.control.Close()
			}
		}
	}()
	var addr net.Addr
	if f.metricsAddr != "" {
		ln, err := listenOn("-metrics-addr", f.metricsAddr)
		if err != nil {
			return nil, err
		}
		addr = ln.Addr()
		c.servers = append(c.servers, server{ln, c.sup.Handler(metricsHandler)})
	}
	if f.queueListen != "" {
		ln, err := listenOn("-identify-queue-listen", f.queueListen)
		if err != nil {
			return nil, err
		}
		var h http.Handler = identify.Handler(c.queue, cmp.Or(f.queueSlack, identify.DefaultSlack), log.With("component", "identify"))
		if rest != nil && restRemote == nil { // the supervisor that serves the queue holds the REST limits for the others too
			mux := http.NewServeMux()
			mux.Handle("/", h)
			mux.Handle("/rest/", ratelimit.Handler(rest, log.With("component", "rest")))
			h = mux
		}
		c.servers = append(c.servers, server{ln, h})
	}
	if path := controlSocketPath(f.controlSocket, env.getenv); path != "" {
		if c.control, err = supervisor.ListenControl(path); err != nil {
			return nil, err
		}
	}
	plan := st.plan
	log.Info("supervisor starting", "shards", plan.ShardCount, "clusters", len(plan.Clusters), "of", plan.Total,
		"max_concurrency", st.maxConc, "identify_interval", f.bot.identifyInterval, "metrics_addr", f.metricsAddr,
		"identify_queue", cmp.Or(f.queueURL, "local"), "identify_queue_listen", f.queueListen, "rest_limits", restLimitsWhere(f, cfg.restRemote),
		"control_socket", controlPath(c.control))
	if env.started != nil {
		env.started(c.sup, addr)
	}
	return c, nil
}

// restLimitsWhere says for the log who holds the clusters' REST limits.
func restLimitsWhere(f *runFlags, remote *ratelimit.Remote) string {
	switch {
	case !f.restShared:
		return "per cluster"
	case remote != nil:
		return remote.URL()
	}
	return "local"
}

// controlPath is the control socket's path for the log, "" for none.
func controlPath(l *supervisor.ControlListener) string {
	if l == nil {
		return ""
	}
	return l.Path()
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

// runSupervisor composes the supervisor's components in a run.Group; sigs
// are the signals registered before startup.
func runSupervisor(ctx context.Context, c *components, sigs <-chan os.Signal, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sup, queue, reaper := c.sup, c.queue, c.reaper
	var g run.Group
	g.Add(func() error { return sup.Run(context.Background()) }, func(error) { sup.Stop() })
	{ // signals: SIGTERM/SIGINT stop (a second one kills), SIGHUP rolls
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
		}, func(error) { close(quit) })
	}
	notifier := supervisor.NewNotifier(sup, log.With("component", "systemd"))
	g.Add(func() error { return notifier.Run(ctx) }, func(error) { cancel() })
	if queue != nil {
		g.Add(func() error { return queue.Run(ctx) }, func(error) { cancel() })
	}
	if reaper != nil {
		g.Add(func() error { return reaper.Run(ctx, 5*time.Second) }, func(error) { cancel() })
	}
	for _, srv := range c.servers {
		srv.add(&g, log)
	}
	if c.control != nil {
		ctl := c.control
		g.Add(func() error { return sup.ServeControl(ctl) }, func(error) { ctl.Close() })
	}
	g.Add(func() error { return sup.WatchRecommended(ctx, reshardCheckEvery) }, func(error) { cancel() })
	err := g.Run()
	var fe *supervisor.FatalError
	if errors.As(err, &fe) {
		return configError(err)
	}
	return err
}
