package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Net is a network namespace: the host's (Path "") or one of NewNetns's.
type Net struct {
	// Path is the namespace's file (/proc/PID/ns/net); "" is the host's.
	Path string
}

// NewNetns makes a network namespace with only loopback, up, held by a
// process of its own until the end of the test. Needs root and ip(8).
func NewNetns(t testing.TB) Net {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		Missing(t, "a network namespace needs ip(8) (Debian: iproute2)")
	}
	lines := make(chan string, 1)
	p := Start(t, nil, lines, "unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity")
	select {
	case l := <-lines:
		if l != "up" {
			t.Fatalf("network namespace: %q", l)
		}
	case <-p.Done():
		t.Fatalf("network namespace: %v\n%s", p.err, p.Output())
	case <-time.After(Patience):
		t.Fatalf("network namespace: loopback not up within %v", Patience)
	}
	return Net{Path: fmt.Sprintf("/proc/%d/ns/net", p.Cmd.Process.Pid)}
}

// Prefix returns the command prefix that runs a program in the namespace.
func (n Net) Prefix() []string {
	if n.Path == "" {
		return nil
	}
	return []string{"nsenter", "--net=" + n.Path, "--"}
}

// Client returns an HTTP client whose connections are made in the
// namespace.
func (n Net) Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = n.dial
	tr.DisableKeepAlives = true // no idle connections left behind by tests
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// dial makes the socket from an OS thread moved into the namespace for the
// time of the socket(2) call; a connected socket stays in the namespace it
// was made in.
func (n Net) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.Path == "" {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // unlocked only if the thread is back in its own namespace
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer home.Close()
		target, err := os.Open(n.Path)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("setns %s: %w", n.Path, err)}
			return
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if setns(home) == nil {
			runtime.UnlockOSThread()
		} // else the goroutine ends locked and Go retires the thread
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// Run runs argv to its end and returns its combined output, failing with
// both if it fails.
func Run(ctx context.Context, env []string, stdin string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("%s: exit status %d", strings.Join(argv, " "), ExitStatus(ee.ProcessState))
		}
		return string(out), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return string(out), nil
}
