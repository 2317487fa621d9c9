package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// gatewayFlags are the settings of each shard's gateway session: the
// supervisor takes them and hands them to every cluster on its command line.
type gatewayFlags struct {
	apiURL             string
	intents            string
	cache              string
	connectTimeout     time.Duration
	guildReadyTimeout  time.Duration
	reconnectDelay     time.Duration
	invalidSessionWait time.Duration
}

func (g *gatewayFlags) register(fs *flag.FlagSet) {
	def := cluster.Defaults()
	registerAPIURL(fs, &g.apiURL)
	fs.StringVar(&g.intents, "intents", "default", "gateway intents: a number, or names such as guilds,guild_messages,message_content; default is every non-privileged intent")
	fs.StringVar(&g.cache, "state-cache", cluster.DefaultCache, "what discordgo's state keeps: channels,threads,emojis,stickers,members,thread_members,roles,voice,presences,messages=N, all or none")
	fs.DurationVar(&g.connectTimeout, "shard-connect-timeout", def.ShardConnectTimeout, "a shard's connect (grant to READY) must complete within this, or its cluster exits and is restarted")
	fs.DurationVar(&g.guildReadyTimeout, "guild-ready-timeout", def.GuildReadyTimeout, "how long a shard waits for the guilds READY listed before it counts as ready anyway")
	fs.DurationVar(&g.reconnectDelay, "reconnect-delay", def.ReconnectDelay, fmt.Sprintf("upper bound of the first jittered reconnect delay; doubles per failure up to %v", def.MaxReconnectDelay))
	fs.DurationVar(&g.invalidSessionWait, "invalid-session-wait", def.MaxInvalidSessionWait, "after op 9, wait a random time between a fifth of this and this before identifying again (Discord asks 1-5 s)")
}

// gatewaySettings are gatewayFlags, checked.
type gatewaySettings struct {
	apiURL  *url.URL
	intents discordgo.Intent
	cache   cluster.Cache
}

func (g *gatewayFlags) check() (gatewaySettings, error) {
	var s gatewaySettings
	var err error
	if s.apiURL, err = apiurl.Parse(g.apiURL); err != nil {
		return s, configError(fmt.Errorf("-api-url: %w", err))
	}
	if s.intents, err = cluster.ParseIntents(g.intents); err != nil {
		return s, configError(err)
	}
	if s.cache, err = cluster.ParseCache(g.cache); err != nil {
		return s, configError(err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"-shard-connect-timeout", g.connectTimeout}, {"-guild-ready-timeout", g.guildReadyTimeout},
		{"-reconnect-delay", g.reconnectDelay}, {"-invalid-session-wait", g.invalidSessionWait}} {
		if d.v <= 0 {
			return s, configError(fmt.Errorf("%s: %v, must be positive", d.name, d.v))
		}
	}
	return s, nil
}

// args hands the flags to a child.
func (g *gatewayFlags) args() []string {
	return []string{"-api-url", g.apiURL, "-intents", g.intents, "-state-cache", g.cache,
		"-shard-connect-timeout", g.connectTimeout.String(), "-guild-ready-timeout", g.guildReadyTimeout.String(),
		"-reconnect-delay", g.reconnectDelay.String(), "-invalid-session-wait", g.invalidSessionWait.String()}
}

// clusterConfig fills a cluster's gateway settings from the flags; the
// durations no flag sets are left for cluster.Config.SetDefaults.
func (g *gatewayFlags) clusterConfig(s gatewaySettings, id cluster.Identity) cluster.Config {
	return cluster.Config{
		ClusterID: id.ClusterID, ShardIDs: id.ShardIDs, ShardCount: id.ShardCount,
		APIURL: s.apiURL, Intents: s.intents, Cache: s.cache,
		ShardConnectTimeout: g.connectTimeout, GuildReadyTimeout: g.guildReadyTimeout,
		ReconnectDelay:        g.reconnectDelay,
		MinInvalidSessionWait: g.invalidSessionWait / 5, MaxInvalidSessionWait: g.invalidSessionWait,
	}
}

func registerAPIURL(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "api-url", "https://discord.com", "base URL of Discord's REST API and gateway lookup (a REST proxy, or the fake Discord)")
}

// queueFlags are a local identify queue's: the supervisor's, a lone
// cluster's, the identify-queue service's.
type queueFlags struct {
	maxConcurrency   int
	identifyInterval time.Duration
	reserve          reserveFlag
}

func (q *queueFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&q.maxConcurrency, "max-concurrency", 0, "Discord's identify concurrency; 0 asks GET /gateway/bot")
	fs.DurationVar(&q.identifyInterval, "identify-interval", identify.DiscordInterval, "minimum time between two IDENTIFYs of one max_concurrency bucket")
	registerReserve(fs, &q.reserve)
}

func (q *queueFlags) check() error {
	if q.maxConcurrency < 0 || q.maxConcurrency > wire.MaxShardID {
		return configError(fmt.Errorf("-max-concurrency: %d, must be between 0 and %d", q.maxConcurrency, wire.MaxShardID))
	}
	if q.identifyInterval <= 0 {
		return configError(fmt.Errorf("-identify-interval: %v, must be positive", q.identifyInterval))
	}
	return nil
}

func registerTokenFile(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "token-file", "", "file holding the bot token (else DISCORD_TOKEN, else systemd's $CREDENTIALS_DIRECTORY/discord-token)")
}

// botFlags are what the process that talks to Discord for the whole bot
// needs: the supervisor, or a cluster running alone.
type botFlags struct {
	queueFlags
	tokenFile        string
	registerCommands bool
	commandGuild     string
}

// reserveFlag is -session-start-reserve: "auto" (identify.AutoReserve) or
// a number of session starts.
type reserveFlag int

func registerReserve(fs *flag.FlagSet, r *reserveFlag) {
	*r = identify.AutoReserve
	fs.Var(r, "session-start-reserve", `session starts never spent, so that a restart loop cannot use up Discord's session_start_limit: a number, or "auto" (5% of the limit, at least 1)`)
}

func (r *reserveFlag) String() string {
	if *r == identify.AutoReserve {
		return "auto"
	}
	return strconv.Itoa(int(*r))
}

func (r *reserveFlag) Set(s string) error {
	if s == "auto" {
		*r = identify.AutoReserve
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want a number of session starts (0 or more) or auto", s)
	}
	*r = reserveFlag(n)
	return nil
}

func (b *botFlags) register(fs *flag.FlagSet) {
	registerTokenFile(fs, &b.tokenFile)
	b.queueFlags.register(fs)
	fs.BoolVar(&b.registerCommands, "register-commands", true, "overwrite the application's slash commands with the bot's at start (done by whoever runs cluster 0)")
	fs.StringVar(&b.commandGuild, "command-guild", "", "register the slash commands in this guild only (they appear at once; for development)")
}

// token loads the token; a missing one is a configuration error that says
// how to give one.
func (b *botFlags) token(getenv func(string) (string, bool)) (secret.Token, error) {
	tok, _, err := secret.Load(b.tokenFile, getenv)
	if errors.Is(err, secret.ErrNoToken) {
		return tok, configError(fmt.Errorf("%w (no token at hand? `make demo` runs everything against a built-in fake Discord)", err))
	}
	if err != nil {
		return tok, configError(err)
	}
	return tok, nil
}

func (b *botFlags) check() error {
	if err := b.queueFlags.check(); err != nil {
		return err
	}
	if b.commandGuild != "" {
		if _, err := strconv.ParseUint(b.commandGuild, 10, 64); err != nil {
			return configError(fmt.Errorf("-command-guild %q: not a guild id", b.commandGuild))
		}
	}
	return nil
}

// gatewayBot asks GET /gateway/bot at start; a refused token is a
// configuration error.
func gatewayBot(ctx context.Context, api *discordapi.Client) (*discordapi.GatewayBot, error) {
	g, err := api.GatewayBot(ctx)
	if err != nil {
		return nil, restError(err)
	}
	return &g, nil
}

// localQueue is the identify queue of a process that paces IDENTIFYs
// itself: maxConc buckets (0: gb's max_concurrency), starting from gb's
// session budget when GET /gateway/bot was asked (gb not nil). With api it
// asks Discord for the budget itself, keeping reserve back: run its Run.
func localQueue(maxConc int, gb *discordapi.GatewayBot, api *discordapi.Client, qf queueFlags,
	log *slog.Logger, reg prometheus.Registerer) (*identify.Queue, error) {
	if maxConc == 0 && gb != nil {
		maxConc = gb.MaxConcurrency
	}
	cfg := identify.Config{MaxConcurrency: maxConc, Interval: qf.identifyInterval, Reserve: int(qf.reserve)}
	if api != nil {
		cfg.Fetch = api.Budget
	}
	q, err := identify.New(cfg, log, identify.NewMetrics(reg))
	if err != nil {
		return nil, configError(err)
	}
	if gb != nil {
		q.SetBudget(gb.Budget)
	}
	return q, nil
}

// restError turns a REST failure at start into the right exit status: a
// token Discord refuses is configuration, anything else a failure.
func restError(err error) error {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == 401 {
		return configError(fmt.Errorf("%w: Discord refused the token (401): put the bot's current token in DISCORD_TOKEN, -token-file or the systemd credential", err))
	}
	return err
}

// registerBotCommands registers the bot's commands, once per bot start (by
// whoever runs cluster 0). A refused token is returned as a configuration
// error; any other failure is logged and the bot runs on.
func (b *botFlags) registerBotCommands(ctx context.Context, api *discordapi.Client, bot *cluster.Bot, log *slog.Logger) error {
	if !b.registerCommands {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	appID, err := api.RegisterCommands(ctx, bot.Commands(), b.commandGuild)
	if err != nil {
		if err := restError(err); ExitCode(err) == ExitFatalConfig {
			return err
		}
		log.Error("register slash commands; the bot runs without updating them", "err", err)
		return nil
	}
	log.Info("slash commands registered", "application_id", appID, "commands", len(bot.Commands()), "guild", b.commandGuild)
	return nil
}
