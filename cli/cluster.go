package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/oklog/run"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// runCluster is one cluster process: started by the supervisor (its channel
// at fd 3 brings the token and the identify queue), or alone (token from
// the environment, its own identify queue; for compose layouts without a
// supervisor per machine).
func runCluster(args []string, bot *cluster.Bot, stderr io.Writer) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	var (
		lf          logFlags
		gf          gatewayFlags
		bf          botFlags
		metricsAddr string
	)
	lf.register(fs)
	gf.register(fs)
	bf.register(fs)
	fs.StringVar(&metricsAddr, "metrics-addr", "", "when running alone: address for /metrics; empty: none")
	if err := parse(fs, args); err != nil {
		return err
	}
	id, err := cluster.IdentityFromEnv(os.Getenv)
	if err != nil {
		return configError(err)
	}
	base, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	log := base.With("cluster_id", id.ClusterID)
	// discordgo logs through a package variable; in this process it speaks
	// through the cluster's logger, so its lines carry cluster_id too.
	discordgo.Logger = discordgoLogger(log)
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

	_, supervised := os.LookupEnv(wire.EnvChannelFD)
	reg := newRegistry(!supervised) // a supervised cluster's process is read by its supervisor
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g run.Group
	var link *cluster.Link
	if fdEnv, supervised := os.LookupEnv(wire.EnvChannelFD); supervised {
		fd, err := strconv.Atoi(fdEnv)
		if err != nil || fd < 3 {
			return configError(fmt.Errorf("%s=%q: not a descriptor", wire.EnvChannelFD, fdEnv))
		}
		link, err = cluster.Connect(uintptr(fd), &wire.Hello{ClusterID: id.ClusterID, PID: os.Getpid(), ShardIDs: id.ShardIDs,
			Build: func() string { v, _, _ := buildinfo.Get(); return v }(), Handoff: true}, 30*time.Second, log)
		if err != nil {
			return fmt.Errorf("connect to supervisor: %w", err)
		}
		link.SetGatherer(reg)
		cfg.Link = link
		g.Add(func() error { return link.Run(ctx) }, func(error) { cancel() })
	} else {
		if cfg.Token, err = bf.token(os.LookupEnv); err != nil {
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

// discordgoLogger adapts discordgo's logger (used at LogWarning and above:
// lower levels print the IDENTIFY payload, token included).
func discordgoLogger(log *slog.Logger) func(msgL, caller int, format string, a ...any) {
	return func(msgL, _ int, format string, a ...any) {
		// After a RESUME, discordgo warns of any first frame but READY and
		// RESUMED, dumping it whole: a replayed event, as every RESUME
		// after a gap (a handoff's included) starts with. Not news, and
		// the dump holds message content.
		if strings.HasPrefix(format, "Expected READY/RESUMED") {
			return
		}
		level := slog.LevelWarn
		if msgL == discordgo.LogError {
			level = slog.LevelError
		}
		msg := strings.TrimSpace(fmt.Sprintf(format, a...))
		// A read from a socket closed under discordgo while it still
		// held it: only a handoff's freeze does that (discordgo's own
		// closes let go of the socket first), and it is logged as such.
		if strings.HasPrefix(format, "error reading from gateway") && strings.Contains(msg, "use of closed network connection") {
			level = slog.LevelDebug
		}
		log.Log(context.Background(), level, "discordgo: "+msg)
	}
}
