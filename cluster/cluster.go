// Package cluster is shardvisor's child process: it runs a group of gateway
// shards (one discordgo session each) for the bot, paces every IDENTIFY
// through an identify queue, reports each shard's state, and closes its
// sessions in parallel on the way out. Its Bot type is how a bot built on
// shardvisor adds its commands and event handlers.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Config is a cluster's configuration.
type Config struct {
	ClusterID  int
	ShardIDs   []int
	ShardCount int
	Token      secret.Token
	// APIURL is where Discord's REST (and the gateway lookup) is; nil
	// means Discord itself.
	APIURL  *url.URL
	Intents discordgo.Intent
	Cache   Cache
	// ShardConnectTimeout bounds a connect, from the identify grant to
	// READY or RESUMED; waiting for a grant does not count.
	ShardConnectTimeout time.Duration
	// GuildReadyTimeout bounds the wait for READY's guilds.
	GuildReadyTimeout time.Duration
	// Min/MaxInvalidSessionWait is the pause before identifying again after
	// op 9 (Discord asks for 1-5 s).
	MinInvalidSessionWait, MaxInvalidSessionWait time.Duration
	// ReconnectDelay is the upper bound of the first, jittered reconnect
	// delay; it doubles with each failure up to MaxReconnectDelay.
	ReconnectDelay, MaxReconnectDelay time.Duration
	// StatusInterval is how often status is reported even without change.
	StatusInterval time.Duration
	// CloseTimeout bounds the parallel close of every session on the way out.
	CloseTimeout time.Duration
	// Identify paces IDENTIFYs: the supervisor over the channel, or a local
	// queue when the cluster runs alone.
	Identify identify.Acquirer
	// Reporter receives status reports; nil when the cluster runs alone.
	Reporter Reporter
	// Link, set when the cluster runs under a supervisor, is its channel:
	// New takes Token, Identify and Reporter from it.
	Link *Link
}

// Reporter is told what the cluster's shards are doing.
type Reporter interface {
	// Status sends a status report; it must not block.
	Status(*wire.Status)
	// Fatal says that the cluster is about to exit with status 78.
	Fatal(*wire.Fatal)
}

// Defaults is a Config holding only the production durations: the one
// place they are written, which SetDefaults fills in and the command
// line's flags start from.
func Defaults() Config {
	return Config{
		ShardConnectTimeout:   2 * time.Minute,
		GuildReadyTimeout:     time.Minute,
		MinInvalidSessionWait: time.Second,
		MaxInvalidSessionWait: 5 * time.Second,
		ReconnectDelay:        time.Second,
		MaxReconnectDelay:     time.Minute,
		StatusInterval:        time.Second,
		CloseTimeout:          5 * time.Second,
	}
}

// SetDefaults fills in zero durations from Defaults.
func (c *Config) SetDefaults() {
	d := Defaults()
	for _, p := range []struct{ v, def *time.Duration }{
		{&c.ShardConnectTimeout, &d.ShardConnectTimeout}, {&c.GuildReadyTimeout, &d.GuildReadyTimeout},
		{&c.MinInvalidSessionWait, &d.MinInvalidSessionWait}, {&c.MaxInvalidSessionWait, &d.MaxInvalidSessionWait},
		{&c.ReconnectDelay, &d.ReconnectDelay}, {&c.MaxReconnectDelay, &d.MaxReconnectDelay},
		{&c.StatusInterval, &d.StatusInterval}, {&c.CloseTimeout, &d.CloseTimeout},
	} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
}

func (c *Config) validate() error {
	if len(c.ShardIDs) == 0 {
		return errors.New("cluster has no shards")
	}
	for _, id := range c.ShardIDs {
		if id < 0 || id >= c.ShardCount {
			return fmt.Errorf("shard %d out of range for %d shards", id, c.ShardCount)
		}
	}
	if c.Token.Empty() {
		return errors.New("no token")
	}
	if c.Identify == nil {
		return errors.New("no identify queue")
	}
	return nil
}

// Cluster runs a group of shards.
type Cluster struct {
	cfg        Config
	bot        *Bot
	log        *slog.Logger
	metrics    *clusterMetrics
	warnings   *gatewayWarnings
	httpClient *http.Client
	shards     []*shard
	ctx        context.Context // for interactions; ends when Run stops its shards
	// ratelimiter is discordgo's REST limiter, one for all the shards.
	ratelimiter *discordgo.RateLimiter
	change      chan struct{}
	local       *Local
	commands    sync.WaitGroup // interactions being answered
	// live is false while the cluster runs in shadow (shadow.go): the bot
	// is handed no event.
	live atomic.Bool

	// The handoff (handoff.go).
	fields         sessionFieldsOK
	fieldsErr      error         // the self-check failed: no handoff
	handoff        *handoffInbox // a replacement's: what its predecessor hands over
	handoffCause   string        // why it is handed over: a wire Cause constant
	handoffMetrics *handoffMetrics
	running        atomic.Bool // Run has started the shards
	frozen         atomic.Bool // the shards were frozen for a handoff
	handoffMu      sync.Mutex  // a freeze, or a thaw
	// The bot's user, asked once for crash resumes (checkpoint.go).
	userOnce sync.Once
	user     *discordgo.User
	userErr  error
}

// New returns a cluster. A nil bot has no commands; a nil logger discards.
func New(cfg Config, bot *Bot, logger *slog.Logger, reg prometheus.Registerer) (*Cluster, error) {
	cfg.SetDefaults()
	if l := cfg.Link; l != nil {
		cfg.Token, cfg.Identify, cfg.Reporter = l.Welcome().Token, l, l
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("cluster %d: %w", cfg.ClusterID, err)
	}
	if bot == nil {
		bot = NewBot()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, bot: bot, log: logger, ctx: context.Background(), change: make(chan struct{}, 1),
		handoffCause: wire.CauseRollingRestart}
	c.live.Store(cfg.Link == nil || !cfg.Link.Welcome().Shadow)
	c.httpClient = HTTPClient(cfg.APIURL)
	rt := &restTransport{next: c.httpClient.Transport, metrics: newRESTMetrics(reg)}
	if rt.next == nil {
		rt.next = http.DefaultTransport
	}
	if l := cfg.Link; l != nil && l.Welcome().RESTTickets {
		rt.link = l
	}
	c.httpClient.Transport = rt
	c.ratelimiter = discordgo.NewRatelimiter() // one for every shard: Discord's limits are the bot's
	c.metrics = newClusterMetrics(reg, bot.CommandNames(), func() []*shard { return c.shards })
	c.warnings = newGatewayWarnings(logger, reg)
	c.warnings.frozen = c.frozen.Load
	c.handoffMetrics = newHandoffMetrics(reg)
	newShadowGauge(reg, c)
	if c.fields, c.fieldsErr = checkSessionFields(); c.fieldsErr != nil {
		logger.Warn("this discordgo's session fields are not as expected: a rolling restart identifies every shard instead of handing it over", "err", c.fieldsErr)
	}
	if l := cfg.Link; l != nil {
		if l.Welcome().Handoff {
			c.handoff = newHandoffInbox()
			if cause := l.Welcome().HandoffCause; cause != "" {
				c.handoffCause = cause
			}
		}
		l.attach(c, c.handoff)
	}
	for _, id := range cfg.ShardIDs {
		sh := newShard(c, id)
		c.shards = append(c.shards, sh)
		c.warnings.addShard(sh.s, id)
	}
	c.local = newLocal(c)
	if cfg.Link != nil {
		cfg.Link.fleet.local.Store(c.local) // it serves fleet requests from now on
	}
	return c, nil
}

// Local is the cluster's view of itself, its Fleet included.
func (c *Cluster) Local() *Local { return c.local }

// finishCommands waits for the commands still running after a handoff,
// until timeout.
func (c *Cluster) finishCommands(timeout <-chan time.Time) {
	done := make(chan struct{})
	go func() { c.commands.Wait(); close(done) }()
	select {
	case <-done:
	case <-timeout:
		c.log.Warn("commands still running after the close timeout; cancelling them", "close_timeout", c.cfg.CloseTimeout)
	}
}

// HTTPClient returns the client for Discord's REST API at base (nil:
// Discord itself).
func HTTPClient(base *url.URL) *http.Client {
	c := &http.Client{Timeout: 20 * time.Second}
	if base != nil && !apiurl.IsDiscord(base) {
		c.Transport = apiurl.Transport(base, nil)
	}
	return c
}

func (c *Cluster) changed() {
	select {
	case c.change <- struct{}{}:
	default:
	}
}

// Status returns every shard's state.
func (c *Cluster) Status() *wire.Status {
	st := &wire.Status{}
	for _, sh := range c.shards {
		st.Shards = append(st.Shards, sh.status())
	}
	return st
}

// reportGap keeps state changes from flooding the channel: a burst of
// changes is reported at most this often. A report is ~150 bytes a shard,
// so the gap grows with the cluster (5.4 ms for 8 shards, 55 ms for 1000).
func reportGap(shards int) time.Duration {
	return 5*time.Millisecond + time.Duration(shards)*50*time.Microsecond
}

// Run connects every shard and keeps them connected until ctx is done; then
// it closes every session in parallel and returns nil. It returns early with
// a *FatalCloseError when a shard meets a fatal close code, or an error
// wrapping ErrConnectHung when a connect hangs; the caller exits then (a hung
// discordgo session cannot be closed).
func (c *Cluster) Run(ctx context.Context) error {
	ctx = context.WithValue(ctx, localKey{}, c.local) // for FleetFrom, in shards and commands alike
	shardCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Commands get a context of their own: after a handoff they may finish
	// (over REST) while the process exits.
	cmdCtx, cmdCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cmdCancel()
	c.ctx = cmdCtx
	errs := make(chan error, len(c.shards))
	for _, sh := range c.shards {
		go func() { errs <- sh.run(shardCtx) }()
	}
	c.running.Store(true)
	c.log.Info("cluster starting", "shards", len(c.shards), "shard_count", c.cfg.ShardCount,
		"intents", FormatIntents(c.cfg.Intents), "state_cache", c.cfg.Cache.String(), "shadow", !c.live.Load())

	tick := time.NewTicker(c.cfg.StatusInterval)
	defer tick.Stop()
	minReportGap := reportGap(len(c.shards))
	var (
		result   error
		running  = len(c.shards)
		last     time.Time
		deferred <-chan time.Time
		allReady bool
	)
	report := func() {
		st := c.Status()
		last, deferred = time.Now(), nil
		if c.cfg.Reporter != nil {
			c.cfg.Reporter.Status(st)
		}
		ready := true
		for _, s := range st.Shards {
			ready = ready && s.State == wire.ShardReady
		}
		if ready && !allReady {
			c.log.Info("every shard ready", "shards", len(st.Shards))
		}
		allReady = ready
	}
	report()
loop:
	for running > 0 {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errs:
			running--
			if err != nil {
				result = err
				break loop
			}
		case <-c.change:
			if gap := time.Since(last); gap < minReportGap {
				if deferred == nil {
					deferred = time.After(minReportGap - gap)
				}
				continue
			}
			report()
		case <-deferred:
			report()
		case now := <-tick.C:
			report()
			c.checkpoint()
			for _, sh := range c.shards {
				if err := sh.hung(now); err != nil {
					result = err
					break loop
				}
			}
		}
	}

	var fatal *FatalCloseError
	if errors.As(result, &fatal) {
		c.log.Error("fatal gateway close; the cluster exits with the configuration status",
			"shard_id", fatal.Shard, "close_code", fatal.Code, "meaning", fatal.Meaning, "action", fatal.Action)
		if c.cfg.Reporter != nil {
			c.cfg.Reporter.Fatal(&wire.Fatal{Shard: fatal.Shard, Code: fatal.Code, Reason: fatal.Meaning + ": " + fatal.Action})
		}
	}
	if errors.Is(result, ErrConnectHung) {
		c.log.Error("a shard's connect hung; exiting so that the supervisor starts the cluster afresh", "err", result)
		return result // its session cannot be closed: do not wait for it
	}
	stop()
	closed := time.Now()
	timeout := time.After(c.cfg.CloseTimeout)
	if c.frozen.Load() {
		c.finishCommands(timeout)
	}
	cmdCancel()
	for ; running > 0; running-- {
		select {
		case <-errs:
		case <-timeout:
			c.log.Warn("sessions still closing after the close timeout", "left", running, "close_timeout", c.cfg.CloseTimeout)
			return result
		}
	}
	if c.frozen.Load() {
		c.log.Info("every shard stopped; its session was handed over, not closed", "took", time.Since(closed).Round(time.Millisecond))
	} else {
		c.log.Info("every session closed", "took", time.Since(closed).Round(time.Millisecond))
	}
	if c.cfg.Reporter != nil {
		c.cfg.Reporter.Status(c.Status())
	}
	return result
}
