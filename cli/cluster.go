package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/oklog/run"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// clusterFlags are the cluster mode's flags.
type clusterFlags struct {
	log         logFlags
	gateway     gatewayFlags
	bot         botFlags
	metricsAddr string
}

// flagSet returns the cluster mode's flag set, writing into f.
func (f *clusterFlags) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	f.log.register(fs)
	f.gateway.register(fs)
	f.bot.register(fs)
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "when running alone: address for /metrics; empty: none")
	return fs
}

// runCluster is one cluster process: started by the supervisor (its channel
// at fd 3 brings the token and the identify queue), or alone (token from
// the environment, its own identify queue; for compose layouts without a
// supervisor per machine).
func runCluster(args []string, bot *cluster.Bot, stderr io.Writer, getenv lookupEnv) error {
	var cf clusterFlags
	fs := cf.flagSet()
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	lf, gf, bf, metricsAddr := &cf.log, &cf.gateway, &cf.bot, cf.metricsAddr
	id, err := cluster.IdentityFromEnv(getenv.get)
	if err != nil {
		return configError(err)
	}
	base, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	log := base.With("cluster_id", id.ClusterID)
	gw, err := gf.check()
	if err != nil {
		return err
	}
	if err := bf.check(); err != nil {
		return err
	}
	if metricsAddr != "" {
		if err := checkAddr("-metrics-addr", metricsAddr); err != nil {
			return err
		}
	}
	cfg := gf.clusterConfig(gw, id)

	fdEnv, supervised := getenv(wire.EnvChannelFD)
	reg := newRegistry(!supervised) // a supervised cluster's process is read by its supervisor
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g run.Group
	var link *cluster.Link
	if supervised {
		fd, err := strconv.Atoi(fdEnv)
		if err != nil || fd < 3 {
			return configError(fmt.Errorf("%s=%q: not a descriptor", wire.EnvChannelFD, fdEnv))
		}
		link, err = cluster.Connect(uintptr(fd), &wire.Hello{ClusterID: id.ClusterID, PID: os.Getpid(), ShardIDs: id.ShardIDs,
			Build: func() string { v, _, _ := buildinfo.Get(); return v }(), Handoff: true, Shadow: true}, 30*time.Second, log)
		if err != nil {
			return fmt.Errorf("connect to supervisor: %w", err)
		}
		link.SetGatherer(reg)
		cfg.Link = link
		g.Add(func() error { return link.Run(ctx) }, func(error) { cancel() })
	} else {
		if cfg.Token, err = bf.token(getenv); err != nil {
			return err
		}
		api := discordapi.New(cfg.Token, cluster.HTTPClient(gw.apiURL))
		gb, err := gatewayBot(ctx, api)
		if err != nil {
			return err
		}
		q, err := localQueue(bf.maxConcurrency, gb, api, bf.queueFlags, log, reg)
		if err != nil {
			return err
		}
		cfg.Identify = q
		g.Add(func() error { return q.Run(ctx) }, func(error) { cancel() })
		log.Info("running without a supervisor: pacing this cluster's identifies locally; other clusters' are not seen")
		if id.ClusterID == 0 {
			if err := bf.registerBotCommands(ctx, api, bot, log); err != nil {
				return err
			}
		}
		if metricsAddr != "" {
			ln, err := listenOn("-metrics-addr", metricsAddr)
			if err != nil {
				return err
			}
			server{ln, healthMux(reg)}.add(&g, log)
		}
	}
	c, err := cluster.New(cfg, bot, log, reg)
	if err != nil {
		return configError(err)
	}
	// discordgo logs through a package variable; in this process the
	// cluster translates its lines (before Run: no session logs earlier).
	discordgo.Logger = c.DiscordgoLogger()
	g.Add(func() error { return c.Run(ctx) }, func(error) { cancel() })
	g.Add(run.SignalHandler(ctx, syscall.SIGTERM, syscall.SIGINT))
	err = g.Run()
	var (
		fatal *cluster.FatalCloseError
		sig   *run.SignalError
	)
	switch {
	case errors.As(err, &fatal):
		return configError(err)
	case errors.Is(err, cluster.ErrSupervisorGone):
		log.Info("supervisor gone; sessions closed")
		return nil
	case errors.As(err, &sig):
		log.Info("sessions closed", "signal", sig.Signal.String())
		return nil
	}
	return err
}
