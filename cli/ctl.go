package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
	"github.com/shardvisor/shardvisor/supervisor"
)

// controlSocketAuto is -control-socket's default: under systemd's
// RuntimeDirectory when it gives one, else none.
const controlSocketAuto = "auto"

// systemdControlSocket is where ctl looks by default outside the service:
// the unit's RuntimeDirectory=shardvisor.
const systemdControlSocket = "/run/shardvisor/control.sock"

// controlSocketPath resolves the run mode's -control-socket: "auto" is
// $RUNTIME_DIRECTORY/control.sock (its first directory) when systemd sets
// RUNTIME_DIRECTORY, else none (""); anything else is a path, "" none.
func controlSocketPath(flagValue string, getenv func(string) (string, bool)) string {
	if flagValue != controlSocketAuto {
		return flagValue
	}
	dir, ok := getenv("RUNTIME_DIRECTORY")
	if dir, _, _ = strings.Cut(dir, ":"); !ok || dir == "" {
		return ""
	}
	return filepath.Join(dir, "control.sock")
}

const ctlUsage = `usage: shardvisor ctl [-control-socket PATH] [-timeout D] COMMAND
commands:
  status           the supervisor's status as a table
  roll             a rolling restart, as SIGHUP: one cluster at a time
  restart CLUSTER  restart one cluster; returns once it is ready again
  reshard [N|auto] reshard to N shards (auto, the default: Discord's
                   recommendation) while the bot stays online; returns once
                   the new fleet is on its way (follow it with status)
`

// runCtl asks the supervisor over its control socket to do something.
func runCtl(args []string, stdout io.Writer, getenv lookupEnv) error {
	var (
		socket  string
		timeout time.Duration
	)
	flags := func() *flag.FlagSet {
		fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
		fs.StringVar(&socket, "control-socket", controlSocketAuto,
			"the supervisor's control socket; auto: $RUNTIME_DIRECTORY/control.sock if set, else "+systemdControlSocket)
		fs.DurationVar(&timeout, "timeout", 10*time.Minute, "give up waiting for the answer after this long (a restart waits until the cluster is ready)")
		return fs
	}
	// The flags come first, then the command's words: parse takes only
	// flags, so it is given what comes before the first word.
	fs := flags()
	fs.SetOutput(io.Discard)
	var words []string
	if err := fs.Parse(args); err == nil {
		words = fs.Args()
	} else if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, ctlUsage)
	}
	if err := parse(flags(), args[:len(args)-len(words)], getenv); err != nil {
		return err
	}
	req, err := ctlRequest(words)
	if err != nil {
		return configError(err)
	}
	path := socket
	if path == controlSocketAuto {
		if path = controlSocketPath(path, getenv); path == "" {
			path = systemdControlSocket
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rep, err := askControl(ctx, path, req)
	if err != nil {
		return err
	}
	if rep.Error != "" {
		return errors.New(rep.Error)
	}
	if rep.Status != nil {
		WriteStatus(stdout, *rep.Status, false)
	}
	if rep.Message != "" {
		fmt.Fprintln(stdout, rep.Message)
	}
	return nil
}

// ctlRequest is the request the command words ask for.
func ctlRequest(words []string) (supervisor.ControlRequest, error) {
	if len(words) == 0 {
		return supervisor.ControlRequest{}, errors.New("no command; commands: status, roll, restart CLUSTER, reshard [N|auto]")
	}
	cmd, rest := words[0], words[1:]
	switch cmd {
	case supervisor.ControlStatus, supervisor.ControlRoll:
		if len(rest) > 0 {
			return supervisor.ControlRequest{}, fmt.Errorf("%s takes no arguments, got %q", cmd, rest)
		}
		return supervisor.ControlRequest{Command: cmd}, nil
	case supervisor.ControlRestart:
		if len(rest) != 1 {
			return supervisor.ControlRequest{}, errors.New("restart takes one cluster id: restart CLUSTER")
		}
		id, err := strconv.Atoi(rest[0])
		if err != nil || id < 0 {
			return supervisor.ControlRequest{}, fmt.Errorf("restart %q: a cluster id is a non-negative integer", rest[0])
		}
		return supervisor.ControlRequest{Command: cmd, Cluster: id}, nil
	case supervisor.ControlReshard:
		switch {
		case len(rest) > 1:
			return supervisor.ControlRequest{}, errors.New("reshard takes at most one shard count: reshard [N|auto]")
		case len(rest) == 0 || rest[0] == "auto":
			return supervisor.ControlRequest{Command: cmd, Shards: supervisor.ReshardAuto}, nil
		}
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < 1 || n > wire.MaxShardID {
			return supervisor.ControlRequest{}, fmt.Errorf("reshard %q: a shard count between 1 and %d, or auto", rest[0], wire.MaxShardID)
		}
		return supervisor.ControlRequest{Command: cmd, Shards: n}, nil
	}
	return supervisor.ControlRequest{}, fmt.Errorf("unknown command %q; commands: status, roll, restart CLUSTER, reshard [N|auto]", cmd)
}

// askControl sends req to the control socket at path and reads the reply.
func askControl(ctx context.Context, path string, req supervisor.ControlRequest) (supervisor.ControlReply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return supervisor.ControlReply{}, fmt.Errorf("no control socket at %s: is the supervisor running, with -control-socket there? (%w)", path, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return supervisor.ControlReply{}, fmt.Errorf("nothing listens on the control socket %s: the supervisor is not running (%w)", path, err)
	case errors.Is(err, os.ErrPermission):
		return supervisor.ControlReply{}, fmt.Errorf("control socket %s: permission denied; it is open to the service's user and group only (%w)", path, err)
	case err != nil:
		return supervisor.ControlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return supervisor.ControlReply{}, fmt.Errorf("control socket %s: send: %w", path, err)
	}
	var rep supervisor.ControlReply
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&rep); err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("control socket %s: no answer: %w (the supervisor may still be doing it; see ctl status)", path, ctx.Err())
		}
		return rep, fmt.Errorf("control socket %s: read the answer: %w", path, err)
	}
	return rep, nil
}
