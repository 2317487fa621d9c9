package cli

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/metrics"
	"github.com/shardvisor/shardvisor/supervisor"
)

// supervisorCfg is the run mode's flags, checked: everything that can be
// known before asking Discord anything.
type supervisorCfg struct {
	flags      runFlags
	log        *slog.Logger
	gw         gatewaySettings
	plan       supervisor.PlanConfig // Shards unset when autoShards
	planned    *supervisor.Plan      // the plan, checked against this machine, unless autoShards
	autoShards bool
	clustersBy string // the flag that splits the shards: -shards-per-cluster or -clusters
	remote     *identify.Remote
	restRemote *ratelimit.Remote // -rest-limits-url
	reapAlways bool
	reapAuto   bool
	token      secret.Token
}

// supervisorConfig parses args (and SHARDVISOR_* variables) and checks
// them; every error is a configuration error that names the flag.
func supervisorConfig(args []string, env runEnv) (*supervisorCfg, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg := &supervisorCfg{}
	f := &cfg.flags
	f.register(fs)
	if err := parse(fs, args, env.getenv); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	if cfg.log, err = f.log.logger(env.stderr); err != nil {
		return nil, err
	}
	if cfg.gw, err = f.gateway.check(); err != nil {
		return nil, err
	}
	if err := f.bot.check(); err != nil {
		return nil, err
	}
	if err := f.policy.Validate(); err != nil {
		return nil, configError(err)
	}
	for _, d := range []struct {
		name string
		ok   bool
	}{{"-shutdown-timeout", f.shutdownTimeout > 0}, {"-child-watchdog", f.childWatchdog > 0},
		{"-scrape-timeout", f.scrapeTimeout > 0}, {"-identify-queue-slack", f.queueSlack >= 0},
		{"-session-resume-window", f.sessionWindow > 0}, {"-rest-global-limit", f.restGlobal > 0}} {
		if !d.ok {
			return nil, configError(fmt.Errorf("%s: must be positive", d.name))
		}
	}
	if f.scrapeReuse < 0 || f.scrapeReuse > metrics.MaxReuse {
		return nil, configError(fmt.Errorf("-scrape-reuse: must be between 0 and %v (below the shortest scrape interval)", metrics.MaxReuse))
	}
	for _, a := range []struct{ name, v string }{{"-metrics-addr", f.metricsAddr}, {"-identify-queue-listen", f.queueListen}} {
		if a.v != "" {
			if err := checkAddr(a.name, a.v); err != nil {
				return nil, err
			}
		}
	}
	if f.sessionDir != "" {
		if fi, err := os.Stat(f.sessionDir); err == nil && !fi.IsDir() {
			return nil, configError(fmt.Errorf("-session-dir %q: not a directory", f.sessionDir))
		}
	}
	pc := supervisor.PlanConfig{ShardsPerCluster: f.perClust}
	cfg.clustersBy = "-shards-per-cluster"
	if set["clusters"] {
		pc.Clusters, pc.ShardsPerCluster, cfg.clustersBy = f.clusters, 0, "-clusters"
		if set["shards-per-cluster"] {
			pc.ShardsPerCluster = f.perClust
		}
	}
	if f.ids != "" {
		if pc.ClusterIDs, err = supervisor.ParseIDs("-cluster-ids", f.ids); err != nil {
			return nil, configError(err)
		}
	}
	if f.share != "" {
		if pc.Share, err = supervisor.ParseShare("-cluster-share", f.share); err != nil {
			return nil, configError(err)
		}
	}
	if f.queueURL != "" {
		if f.queueListen != "" {
			return nil, configError(errors.New("-identify-queue-url and -identify-queue-listen both set: a supervisor serves its own queue, or uses another's"))
		}
		if cfg.remote, err = identify.NewRemote(f.queueURL, nil, cfg.log.With("component", "identify")); err != nil {
			return nil, configError(fmt.Errorf("-identify-queue-url: %w", err))
		}
	}
	if f.restLimitsURL != "" {
		if !f.restShared {
			return nil, configError(errors.New("-rest-limits-url and -rest-shared-limits=false both set: the supervisor takes its clusters' tickets from the service (and falls back on its own limits) only with -rest-shared-limits, the default"))
		}
		if cfg.restRemote, err = ratelimit.NewRemote(f.restLimitsURL, nil, cfg.log.With("component", "rest")); err != nil {
			return nil, configError(fmt.Errorf("-rest-limits-url: %w", err))
		}
	}
	cfg.autoShards = f.shards == "auto"
	if !cfg.autoShards {
		if pc.Shards, err = strconv.Atoi(f.shards); err != nil {
			return nil, configError(fmt.Errorf("-shards %q: a number of shards, or auto", f.shards))
		}
	}
	cfg.plan = pc
	// The plan's shape is checked by supervisor.NewPlan alone; what this
	// machine and Discord's budget allow, by checkPlanLimits.
	if !cfg.autoShards { // known without Discord: refuse a bad plan before asking it anything
		plan, err := supervisor.NewPlan(pc)
		if err != nil {
			return nil, configError(err)
		}
		if err := checkPlanLimits(plan, cfg.clustersBy, nil, hostLimits(), cfg.log); err != nil {
			return nil, err
		}
		cfg.planned = &plan
	}
	cfg.reapAlways, cfg.reapAuto = f.reap == "always", f.reap == "auto"
	if !cfg.reapAlways && !cfg.reapAuto && f.reap != "never" {
		return nil, configError(fmt.Errorf("-reap-orphans %q: want auto, always or never", f.reap))
	}
	if cfg.token, err = f.bot.token(env.getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkAddr checks a host:port flag: a port number in 0-65535 (or a
// service name) and a host that is empty, an IP address or a name.
func checkAddr(name, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return configError(fmt.Errorf("%s %q: want host:port: %w", name, v, unwrapAddrErr(err)))
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			return configError(fmt.Errorf("%s %q: port %d is not between 0 and 65535", name, v, n))
		}
	} else if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return configError(fmt.Errorf("%s %q: port %q is neither a number nor a known service", name, v, port))
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return configError(fmt.Errorf("%s %q: host %q is neither an IP address nor a host name", name, v, host))
	}
	return nil
}

func unwrapAddrErr(err error) error {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return errors.New(ae.Err)
	}
	return err
}

// validHostname reports whether h could be a DNS name: labels of letters,
// digits and hyphens (underscores tolerated), dot-separated.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// listen listens on a checked address flag; the error names the flag.
func listenOn(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", name, err)
	}
	return ln, nil
}

// newRegistry is a mode's registry: the Go runtime's collectors, the
// build's, and this process's own when it is not a supervised cluster
// (whose process metrics the supervisor reads from outside).
func newRegistry(process bool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), buildinfo.Collector())
	if process {
		reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return reg
}
