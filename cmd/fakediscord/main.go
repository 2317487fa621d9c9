// Command fakediscord runs a fake Discord — REST and gateway — on its own,
// for shardvisor and bots to run against without a token or the internet.
// It is package discordtest's Server behind flags.
//
//	fakediscord -listen 127.0.0.1:8710 -guilds 2000 -shards 4 -max-concurrency 1 -event-rate 5
//
// It prints the URL to give `shardvisor -api-url` (REST under /api/v9 and
// /api/v10; GET gateway answers the fake's ws:// URL), the token it accepts
// and the control API's URL, then serves until SIGINT or SIGTERM. Bad flags
// exit with status 2, other failures with 1.
//
// The fake enforces Discord's gateway rules (identify pacing per bucket,
// session start budget, close codes 4001-4014, 120 payloads per minute) and
// records what clients did. See package discordtest for the details.
//
// # Control API
//
// JSON over HTTP under /_fake on the same listener. Unknown fields are
// refused; errors are {"error": "..."} with status 400, 404, 405, 409
// (interact: no session of the shard) or 504 (interact: no reply in time).
// "shard": -1 means every shard where noted.
//
//	GET  /_fake/record                     the record: identifies, resumes, sessions, connections,
//	                                       live sessions per shard (max_live 2 = a bot would answer twice),
//	                                       interactions and replies, session starts, REST calls
//	GET  /_fake/guilds                     {"guild_ids": [...]}
//	POST /_fake/interact                   {"guild_id": "...", "command": "ping", "options": [{"name": "n", "value": 1}],
//	                                        "channel_id": "", "user_id": "", "timeout": "10s"}
//	                                       dispatches INTERACTION_CREATE to the routed shard ("" guild: a DM, shard 0)
//	                                       and answers the bot's reply {"via","type","content","at","latency_ns","status"}
//	POST /_fake/disconnect                 {"shard": 0, "code": 4000}    close with a code; 0 drops TCP; shard -1: all
//	POST /_fake/zombie                     {"shard": 0, "on": true}      stop (or resume) ACKing heartbeats
//	POST /_fake/reconnect                  {"shard": 0}                  op 7; shard -1: all
//	POST /_fake/reconnect-instead-of-ready {"shard": 0}                  op 7 in place of READY on the next IDENTIFY
//	POST /_fake/invalid-session            {"shard": 0, "resumable": false} op 9; shard -1: all
//	POST /_fake/invalid-session-during-guilds {"shard": 0, "after": 3} op 9 after the first 3 GUILD_CREATEs of the next session
//	POST /_fake/malformed                  {"shard": 0, "kind": "json"}  json, unknown_op, oversized or binary
//	POST /_fake/hello-delay                {"delay": "2s"}               delay HELLO on new connections
//	POST /_fake/fail-rest                  {"status": 429, "n": 3}       the next n REST requests fail
//	POST /_fake/event-rate                 {"per_shard_per_second": 50}  MESSAGE_CREATE per live session
//
// The fault answers are {"connections": n}, the number of connections acted on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/discordtest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fakediscord:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run serves until SIGINT or SIGTERM.
func run(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, args, os.Stdout, os.Stderr)
}

// usageError is a bad command line: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// serve parses args, starts the fake, prints where it is on stdout and
// serves until ctx ends. -h prints the usage and returns nil.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, verbose, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	srv, err := discordtest.NewServer(opts)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Fprintf(stdout, "fakediscord: serving %s\n  shardvisor -api-url %s\n  token: %s\n  control API: %s%s/\n",
		srv.URL(), srv.URL(), srv.Token(), srv.URL(), discordtest.ControlPrefix)
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (discordtest.Options, bool, error) {
	var o discordtest.Options
	fs := flag.NewFlagSet("fakediscord", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Addr, "listen", "127.0.0.1:0", "listen `address`")
	fs.StringVar(&o.Token, "token", discordtest.DefaultToken, "bot `token` the fake accepts")
	fs.StringVar(&o.ApplicationID, "application-id", discordtest.DefaultApplicationID, "application (and bot user) `id`")
	fs.IntVar(&o.Guilds, "guilds", discordtest.DefaultGuilds, "total guilds")
	fs.IntVar(&o.Shards, "shards", 1, "recommended shard count in GET gateway/bot")
	fs.IntVar(&o.MaxConcurrency, "max-concurrency", 1, "identify buckets (session_start_limit.max_concurrency)")
	fs.DurationVar(&o.IdentifyInterval, "identify-interval", discordtest.DefaultIdentifyInterval, "one IDENTIFY per bucket per `interval`")
	fs.IntVar(&o.SessionStartLimit, "session-start-limit", discordtest.DefaultSessionStartLimit, "session starts per window")
	fs.DurationVar(&o.SessionStartReset, "session-start-reset", discordtest.DefaultSessionStartReset, "session start `window`")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", discordtest.DefaultHeartbeatInterval, "heartbeat `interval` sent in HELLO")
	fs.IntVar(&o.MaxGuildsPerShard, "max-guilds-per-shard", discordtest.DefaultMaxGuildsPerShard, "more guilds on a shard close it with 4011")
	intents := fs.String("privileged-intents", "", "privileged intents the app may use: comma-separated guild_members, guild_presences, message_content")
	fs.IntVar(&o.ChannelsPerGuild, "channels-per-guild", 1, "text channels in each GUILD_CREATE")
	fs.IntVar(&o.RolesPerGuild, "roles-per-guild", 1, "roles in each GUILD_CREATE, @everyone included")
	fs.IntVar(&o.MembersPerGuild, "members-per-guild", 1, "members in each GUILD_CREATE, the bot included")
	fs.Float64Var(&o.EventRate, "event-rate", 0, "MESSAGE_CREATE per second per live session")
	fs.BoolVar(&o.Compress, "compress", false, "zlib-compress frames of sessions that ask for it")
	fs.IntVar(&o.RESTRateLimit, "rest-rate-limit", discordtest.DefaultRESTRateLimit, "REST requests per second before 429")
	fs.IntVar(&o.SendRateLimit, "send-rate-limit", discordtest.DefaultSendRateLimit, "client payloads per 60 s before close 4008 (negative: no limit)")
	verbose := fs.Bool("v", false, "log every connection and close")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, false, err
		}
		return o, false, usageError{err}
	}
	if fs.NArg() > 0 {
		return o, false, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	for _, f := range []struct {
		name string
		v    int64
		min  int64
	}{
		{"guilds", int64(o.Guilds), 1}, {"shards", int64(o.Shards), 1}, {"max-concurrency", int64(o.MaxConcurrency), 1},
		{"identify-interval", int64(o.IdentifyInterval), 1}, {"session-start-limit", int64(o.SessionStartLimit), 1},
		{"session-start-reset", int64(o.SessionStartReset), 1}, {"heartbeat-interval", int64(o.HeartbeatInterval), 1},
		{"max-guilds-per-shard", int64(o.MaxGuildsPerShard), 1}, {"channels-per-guild", int64(o.ChannelsPerGuild), 1},
		{"roles-per-guild", int64(o.RolesPerGuild), 1}, {"members-per-guild", int64(o.MembersPerGuild), 1},
		{"rest-rate-limit", int64(o.RESTRateLimit), 1},
	} {
		if f.v < f.min {
			return o, false, usageError{fmt.Errorf("-%s must be positive", f.name)}
		}
	}
	if o.EventRate < 0 {
		return o, false, usageError{errors.New("-event-rate must not be negative")}
	}
	if o.SendRateLimit == 0 {
		return o, false, usageError{errors.New("-send-rate-limit must not be 0 (negative: no limit)")}
	}
	names := map[string]discordgo.Intent{
		"guild_members": discordgo.IntentGuildMembers, "guild_presences": discordgo.IntentGuildPresences,
		"message_content": discordgo.IntentMessageContent,
	}
	for _, n := range strings.Split(*intents, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		i, ok := names[strings.ToLower(n)]
		if !ok {
			return o, false, usageError{fmt.Errorf("-privileged-intents: unknown intent %q (guild_members, guild_presences, message_content)", n)}
		}
		o.PrivilegedIntents |= i
	}
	return o, *verbose, nil
}
