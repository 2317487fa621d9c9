// Package cli is shardvisor's command line: the mode word (run, cluster,
// demo, identify-queue, status, healthcheck, ctl, version), each mode's flags, and the wiring of
// its components. A bot built on shardvisor calls Main with its Bot; so
// does cmd/shardvisor, with the /ping bot.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Exit statuses.
const (
	ExitOK          = 0               // a clean stop
	ExitFailure     = 1               // anything else: a crash loop past the restart limit, an unclean stop, ...
	ExitFatalConfig = wire.ExitConfig // configuration no restart can fix: bad flags, bad token, disallowed intents
)

// exitError carries an exit status with an error.
type exitError struct {
	code int
	err  error
	msg  string // err's message in the command line's words; "": err's own
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// configError marks err as a configuration error: exit status 78. A
// library's *field.Error in it is told by the flag's name (flagFor).
func configError(err error) error {
	e := &exitError{code: ExitFatalConfig, err: err}
	if msg, ok := flagMessage(err); ok {
		e.msg = msg
	}
	return e
}

// ExitCode maps an error from a mode to the process's exit status.
func ExitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	}
	return ExitFailure
}

// Main runs the mode named by os.Args[1] for bot and exits with its status.
func Main(bot *cluster.Bot) {
	os.Exit(Run(os.Args[1:], bot, os.Stdout, os.Stderr))
}

// Run runs the mode named by args[0] (run when args is empty or starts
// with a flag) and returns the exit status; errors go to stderr. The
// process's environment is read through os.LookupEnv, by every mode.
func Run(args []string, bot *cluster.Bot, stdout, stderr io.Writer) int {
	return runMode(args, bot, stdout, stderr, os.LookupEnv)
}

// runMode is Run with the environment read through getenv.
func runMode(args []string, bot *cluster.Bot, stdout, stderr io.Writer, getenv lookupEnv) int {
	mode := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		mode, args = args[0], args[1:]
	}
	var err error
	switch mode {
	case "run":
		err = runSupervisorMode(args, bot, runEnv{stderr: stderr, getenv: getenv})
	case "cluster":
		err = runCluster(args, bot, stderr, getenv)
	case "demo":
		err = runDemo(args, bot, stdout, stderr)
	case "identify-queue":
		err = runIdentifyQueue(args, stderr, getenv)
	case "status":
		err = runStatus(args, stdout, getenv)
	case "healthcheck":
		err = runHealthcheck(args, getenv)
	case "ctl":
		err = runCtl(args, stdout, getenv)
	case "guild":
		err = runGuild(args, stdout, getenv)
	case "version":
		v, g, d := buildinfo.Get()
		fmt.Fprintf(stdout, "shardvisor %s (%s, discordgo %s)\n", v, g, d)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = configError(fmt.Errorf("unknown mode %q; modes: run, cluster, demo, identify-queue, status, guild, healthcheck, ctl, version", mode))
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "shardvisor %s: %v\n", mode, err)
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	return ExitCode(err)
}

const usage = `shardvisor runs a sharded Discord bot as several supervised processes.

Usage:
  shardvisor [run] [flags]      the supervisor: plans clusters, starts and restarts them
  shardvisor cluster [flags]    one cluster (started by run; or alone, identity from the environment)
  shardvisor demo               everything against a built-in fake Discord: no token needed
  shardvisor identify-queue     an identify queue and the REST limits, shared by supervisors on several machines
  shardvisor status [-addr A]   the supervisor's status as a table
  shardvisor guild ID           which shard and cluster has a guild, and what it knows of it
  shardvisor healthcheck        exit 0 only when the supervisor is ready
  shardvisor ctl COMMAND        over the control socket: status, roll, restart CLUSTER
  shardvisor version

Every flag can also be set from the environment as SHARDVISOR_<FLAG> (e.g.
SHARDVISOR_SHARDS_PER_CLUSTER=8); flags win; the demo reads none. "shardvisor MODE -h"
lists a mode's flags.
Exit statuses: 0 clean stop, 78 configuration that no restart can fix, 1 anything else.
`

// logFlags are the flags every mode that logs shares.
type logFlags struct {
	format, level string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

// logger returns the slog logger the flags describe, writing to w.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, configError(fmt.Errorf("-log-level %q: want debug, info, warn or error", l.level))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, configError(fmt.Errorf("-log-format %q: want text or json", l.format))
}

// args returns the flags that hand these settings to a child.
func (l *logFlags) args() []string {
	return []string{"-log-format", l.format, "-log-level", l.level}
}
