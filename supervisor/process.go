package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// scrubbedEnv lists what a child must not inherit: systemd's notify and
// watchdog (only the supervisor talks to systemd), socket activation, the
// token (the child gets it over its channel), the fleet secret and the
// identity of another cluster.
var scrubbedEnv = []string{
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
	"DISCORD_TOKEN", "CREDENTIALS_DIRECTORY",
	"SHARDVISOR_FLEET_SECRET", // the supervisors' shared secret: clusters never need it
	wire.EnvClusterID, wire.EnvShardIDs, wire.EnvShardCount, wire.EnvChannelFD,
}

// ChildEnv returns environ without the scrubbed variables, plus the
// cluster's identity.
func ChildEnv(environ []string, c Cluster, shardCount int) []string {
	out := make([]string, 0, len(environ)+4)
next:
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		for _, s := range scrubbedEnv {
			if k == s {
				continue next
			}
		}
		out = append(out, kv)
	}
	return append(out,
		wire.EnvClusterID+"="+strconv.Itoa(c.ID),
		wire.EnvShardIDs+"="+FormatIDs(c.Shards),
		wire.EnvShardCount+"="+strconv.Itoa(shardCount),
		wire.EnvChannelFD+"="+strconv.Itoa(wire.ChildFD),
	)
}

// Process is a running cluster process, as the supervisor sees it.
type Process interface {
	PID() int
	// Channel is the supervisor's end of the process's channel.
	Channel() net.Conn
	// Wait blocks until the process has exited and returns how. It may be
	// called once.
	Wait() Exit
	// Signal sends sig to the process.
	Signal(sig syscall.Signal) error
	// KillGroup sends SIGKILL to the process's whole process group: the
	// process and anything it started that is still in its group.
	KillGroup() error
}

// Launcher starts cluster processes.
type Launcher interface {
	Launch(c Cluster, shardCount int) (Process, error)
}

// ExecLauncher starts the binary now on disk (os.Executable, so that a
// binary replaced for an upgrade is picked up at the next start) with the
// mode word "cluster" and Args.
type ExecLauncher struct {
	// Executable returns the path to run; nil means os.Executable.
	Executable func() (string, error)
	// Args follow the executable's path; the first is the mode word.
	Args []string
	// Environ returns the environment to start from; nil means os.Environ.
	Environ func() []string
	// Stdout and Stderr are the child's; nil means the supervisor's own.
	Stdout, Stderr io.Writer
	// Reaper, if set, learns of every child before it can exit, so that it
	// never reaps one (see Reaper).
	Reaper *Reaper
}

// Launch implements Launcher.
func (l *ExecLauncher) Launch(c Cluster, shardCount int) (Process, error) {
	exe := os.Executable
	if l.Executable != nil {
		exe = l.Executable
	}
	path, err := exe()
	if err != nil {
		return nil, fmt.Errorf("start cluster %d: find executable: %w", c.ID, err)
	}
	environ := os.Environ
	if l.Environ != nil {
		environ = l.Environ
	}
	parentEnd, childEnd, err := wire.Socketpair()
	if err != nil {
		return nil, fmt.Errorf("start cluster %d: %w", c.ID, err)
	}
	defer childEnd.Close() // the child has its own copy once started

	cmd := exec.Command(path, l.Args...)
	cmd.Env = ChildEnv(environ(), c, shardCount)
	cmd.Stdout, cmd.Stderr = l.Stdout, l.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.ExtraFiles = []*os.File{childEnd} // fd 3 == wire.ChildFD
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a terminal's Ctrl-C reaches only the
		// supervisor, which decides, and KillGroup reaches its helpers.
		Setpgid: true,
		// If the supervisor dies without a word, the child is told too (its
		// channel's EOF is the first notice; this is the second).
		Pdeathsig: syscall.SIGTERM,
	}
	start := func() error { return cmd.Start() }
	if l.Reaper != nil {
		err = l.Reaper.Start(start, func() int { return cmd.Process.Pid })
	} else {
		err = start()
	}
	if err != nil {
		parentEnd.Close()
		return nil, fmt.Errorf("start cluster %d: %w", c.ID, err)
	}
	return &execProcess{cmd: cmd, conn: parentEnd, started: time.Now(), reaper: l.Reaper}, nil
}

type execProcess struct {
	cmd     *exec.Cmd
	conn    net.Conn
	started time.Time
	reaper  *Reaper
}

func (p *execProcess) PID() int          { return p.cmd.Process.Pid }
func (p *execProcess) Channel() net.Conn { return p.conn }

func (p *execProcess) Signal(sig syscall.Signal) error {
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

func (p *execProcess) KillGroup() error {
	err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func (p *execProcess) Wait() Exit {
	err := p.cmd.Wait()
	if p.reaper != nil {
		p.reaper.Forget(p.cmd.Process.Pid)
	}
	e := Exit{Code: -1, Uptime: time.Since(p.started), Reason: ReasonExit}
	ps := p.cmd.ProcessState
	if ps == nil {
		_ = err // Wait failed before the process was reaped; nothing more is known
		return e
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal()
		e.Reason = ReasonSignal
		return e
	}
	e.Code = ps.ExitCode()
	return e
}
