package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
)

// DefaultQueueAddr is where `shardvisor identify-queue` listens by default.
const DefaultQueueAddr = "127.0.0.1:9852"

// runIdentifyQueue serves an identify queue and the bot's REST limits, for
// supervisors on several machines: GET /?shard=N (twilight's gateway-queue
// protocol; -identify-queue-url), POST /rest/ticket, /rest/report and
// /rest/cancel (internal/ratelimit's http.go; -rest-limits-url), plus
// /metrics, /healthz and /readyz.
func runIdentifyQueue(args []string, stderr io.Writer, getenv lookupEnv) error {
	fs := flag.NewFlagSet("identify-queue", flag.ContinueOnError)
	var (
		lf      logFlags
		qf      queueFlags
		listen  string
		apiURL  string
		slack   time.Duration
		tokFile string
		global  int
	)
	lf.register(fs)
	qf.register(fs)
	registerAPIURL(fs, &apiURL)
	registerTokenFile(fs, &tokFile)
	fs.StringVar(&listen, "listen", DefaultQueueAddr, "address to serve the queue, /metrics and /healthz on")
	fs.DurationVar(&slack, "slack", 0, "time a caller may take to reach Discord after its grant (dial, TLS, HELLO); 0: 1s")
	fs.IntVar(&global, "rest-global-limit", ratelimit.DefaultGlobal, "the bot's global REST limit, requests per second, held for the supervisors that take their tickets here (-rest-limits-url)")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	base, err := apiurl.Parse(apiURL)
	if err != nil {
		return configError(fmt.Errorf("-api-url: %w", err))
	}
	if err := qf.check(); err != nil {
		return err
	}
	if slack < 0 {
		return configError(fmt.Errorf("-slack: %v, must not be negative", slack))
	}
	if global <= 0 {
		return configError(errors.New("-rest-global-limit: must be positive"))
	}
	if err := checkAddr("-listen", listen); err != nil {
		return err
	}
	bf := botFlags{tokenFile: tokFile}
	token, tokErr := bf.token(getenv)
	if tokErr != nil && qf.maxConcurrency == 0 {
		return tokErr
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		api *discordapi.Client
		gb  *discordapi.GatewayBot
	)
	if tokErr == nil {
		api = discordapi.New(token, cluster.HTTPClient(base))
		if gb, err = gatewayBot(ctx, api); err != nil {
			return err
		}
	}
	reg := newRegistry(true)
	q, err := localQueue(qf.maxConcurrency, gb, api, qf, log, reg)
	if err != nil {
		return err
	}
	if api == nil {
		log.Warn("no token: the queue paces IDENTIFYs but cannot ask Discord for the session start limit, so it counts no session starts")
	}
	rest, err := ratelimit.New(ratelimit.Config{Global: global, Logger: log.With("component", "rest")}, reg)
	if err != nil {
		return configError(fmt.Errorf("-rest-global-limit: %w", err))
	}
	ln, err := listenOn("-listen", listen)
	if err != nil {
		return err
	}
	mux := healthMux(reg)
	mux.Handle("/", identify.Handler(q, cmp.Or(slack, identify.DefaultSlack), log))
	mux.Handle("/rest/", ratelimit.Handler(rest, log.With("component", "rest")))

	log.Info("identify queue serving", "listen", ln.Addr().String(), "max_concurrency", q.Config().MaxConcurrency, "identify_interval", qf.identifyInterval, "slack", cmp.Or(slack, identify.DefaultSlack),
		"rest_global_limit", global)

	var g run.Group
	server{ln, mux}.add(&g, log)
	g.Add(func() error { return q.Run(ctx) }, func(error) { cancel() })
	g.Add(run.SignalHandler(ctx, syscall.SIGTERM, syscall.SIGINT))
	if err := g.Run(); !errors.As(err, new(*run.SignalError)) {
		return err
	}
	return nil
}

// healthMux serves reg's /metrics, and /healthz and /readyz that answer
// 200 while the process serves (all a queue or a lone cluster has to be
// ready for: `healthcheck -addr` works on them).
func healthMux(reg prometheus.Gatherer) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	return mux
}
