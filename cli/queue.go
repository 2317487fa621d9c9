package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/identify"
)

// DefaultQueueAddr is where `shardvisor identify-queue` listens by default.
const DefaultQueueAddr = "127.0.0.1:9852"

// runIdentifyQueue serves only an identify queue, for supervisors on several
// machines (-identify-queue-url): GET /?shard=N (twilight's gateway-queue
// protocol), plus /metrics, /healthz and /readyz.
func runIdentifyQueue(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("identify-queue", flag.ContinueOnError)
	var (
		lf       logFlags
		listen   string
		apiURL   string
		interval time.Duration
		maxConc  int
		slack    time.Duration
		tokFile  string
		reserve  reserveFlag
	)
	lf.register(fs)
	fs.StringVar(&listen, "listen", DefaultQueueAddr, "address to serve the queue, /metrics and /healthz on")
	fs.StringVar(&apiURL, "api-url", "https://discord.com", "base URL of Discord's REST API (for max_concurrency and the session budget)")
	fs.DurationVar(&interval, "identify-interval", identify.DiscordInterval, "minimum time between two IDENTIFYs of one max_concurrency bucket")
	fs.IntVar(&maxConc, "max-concurrency", 0, "Discord's identify concurrency; 0 asks GET /gateway/bot (needs the token)")
	fs.DurationVar(&slack, "slack", 0, "time a caller may take to reach Discord after its grant (dial, TLS, HELLO); 0: 1s")
	fs.StringVar(&tokFile, "token-file", "", "file holding the bot token (else DISCORD_TOKEN or systemd's credential); optional when -max-concurrency is given")
	registerReserve(fs, &reserve)
	if err := parse(fs, args); err != nil {
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
	if interval <= 0 || maxConc < 0 || slack < 0 {
		return configError(fmt.Errorf("-identify-interval must be positive, -max-concurrency and -slack not negative"))
	}
	if slack == 0 {
		slack = identify.DefaultSlack
	}
	bf := botFlags{tokenFile: tokFile}
	token, tokErr := bf.token(os.LookupEnv)
	if tokErr != nil && maxConc == 0 {
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
		g, err := api.GatewayBot(ctx)
		if err != nil {
			return restError(err)
		}
		gb = &g
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
	q, err := localQueue(maxConc, gb, api, interval, reserve, log, reg)
	if err != nil {
		return err
	}
	if api == nil {
		log.Warn("no token: the queue paces IDENTIFYs but cannot ask Discord for the session start limit, so it counts no session starts")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on -listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", identify.Handler(q, slack, log))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok) // serving is all a queue has to be ready for: `healthcheck -addr` works on it

	log.Info("identify queue serving", "listen", ln.Addr().String(), "max_concurrency", q.Config().MaxConcurrency, "identify_interval", interval, "slack", slack)

	var g run.Group
	server{ln, mux}.add(&g, log)
	g.Add(func() error { return q.Run(ctx) }, func(error) { cancel() })
	g.Add(run.SignalHandler(ctx, syscall.SIGTERM, syscall.SIGINT))
	if err := g.Run(); !errors.As(err, new(*run.SignalError)) {
		return err
	}
	return nil
}
