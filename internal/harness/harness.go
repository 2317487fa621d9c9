// Package harness runs shardvisor's deployment files for real, in tests:
//
//   - Build builds the shardvisor and fakediscord binaries (static, as
//     shipped);
//   - StartFake runs the fake Discord as its own process;
//   - BootSystemd boots a throwaway, real systemd as PID 1 of its own PID,
//     mount, cgroup, UTS and IPC namespaces (the boot script is innerScript
//     in systemd.go) with the unit under test installed where an operator
//     installs it;
//   - StartContainer runs a command as PID 1 of its own PID and mount
//     namespaces, chrooted into an image-like root file system, as a
//     container runtime would;
//   - NewNetns makes a network namespace with only loopback up, and
//     Net.Client reaches into it.
//
// Whatever a test starts is stopped, and every namespace and cgroup it made
// is removed, by t.Cleanup, also when the test fails. The namespaced parts
// need root; CanBootSystemd and CanRunContainer say why they cannot run
// here, and the Boot and Start functions skip the test with that reason.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/supervisor"
)

// Patience bounds every wait on an event: generous, for a busy 2-core
// machine running other tests beside these.
const Patience = 90 * time.Second

// Module is the main module's path.
const Module = "github.com/shardvisor/shardvisor"

// RepoRoot returns the directory of the main module's go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory, in this module or a nested one).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(b) == Module {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of %s above the working directory", Module)
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// Binaries are the paths of the built programs.
type Binaries struct {
	Shardvisor  string
	FakeDiscord string
}

// Build builds cmd/shardvisor and cmd/fakediscord as the Makefile and the
// Dockerfile do (CGO_ENABLED=0, -trimpath, stripped) into a directory of
// its own, readable and executable by every user.
func Build(t testing.TB) Binaries {
	t.Helper()
	dir := TempDir(t, 0o755)
	goTool, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goTool = filepath.Join(root, "bin", "go")
		} else {
			t.Fatalf("no go command to build the binaries with: %v", err)
		}
	}
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags", "-s -w", "-o", dir+string(filepath.Separator),
		"./cmd/shardvisor", "./cmd/fakediscord")
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return Binaries{Shardvisor: filepath.Join(dir, "shardvisor"), FakeDiscord: filepath.Join(dir, "fakediscord")}
}

// TempDir returns a new directory that is removed at the end of the test,
// with the given mode (t.TempDir's are 0700, which other users, such as a
// service's dynamic user, cannot enter).
func TempDir(t testing.TB, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shardvisor-harness-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// FreeAddr returns a 127.0.0.1 address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a process a test started: its combined output is kept, and it
// is killed (with its process group) at the end of the test if still
// running.
type Proc struct {
	Cmd  *exec.Cmd
	out  Buffer
	done chan struct{}
	err  error // of Wait, once done is closed
}

// Start starts argv with env (nil: the test's environment) and, if
// lines is not nil, sends it each line of standard output as well.
func Start(t testing.TB, env []string, lines chan<- string, argv ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.Cmd.Env = env
	p.Cmd.Stderr = &p.out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout io.ReadCloser
	if lines != nil {
		var err error
		if stdout, err = p.Cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
	} else {
		p.Cmd.Stdout = &p.out
	}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv[0], err)
	}
	var copied sync.WaitGroup
	if stdout != nil {
		copied.Add(1)
		go func() {
			defer copied.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.out.Write(append(sc.Bytes(), '\n'))
				select {
				case lines <- sc.Text():
				default:
				}
			}
		}()
	}
	go func() {
		copied.Wait()
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		p.Cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(Patience):
			t.Errorf("%s (pid %d) still running after SIGKILL", argv[0], p.Cmd.Process.Pid)
		}
	})
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output returns what the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// Wait waits up to timeout for the process to exit and returns its exit
// status (128+n for a signal n), or an error if it is still running.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("pid %d still running after %v", p.Cmd.Process.Pid, timeout)
	}
	return ExitStatus(p.Cmd.ProcessState), nil
}

// ExitStatus is the exit status of ps as a shell reports it.
func ExitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// Buffer collects a process's output; safe for concurrent use.
type Buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed at the next write
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return b.b.Write(p)
}

// WaitFor waits until the output contains s, at most timeout, and
// reports whether it does.
func (b *Buffer) WaitFor(s string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		b.mu.Lock()
		if strings.Contains(b.b.String(), s) {
			b.mu.Unlock()
			return true
		}
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Poll calls cond until it returns true, at most until Patience has
// passed, and fails the test then with what and the last error of cond.
// For states that no event announces (a process's /status, a unit's
// state); interval is the time between two calls.
func Poll(t testing.TB, what string, interval time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(Patience)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v (last error: %v)", what, Patience, last)
		}
		time.Sleep(interval)
	}
}

// GetJSON gets url with client and decodes its JSON answer into v.
func GetJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Get gets url with client and returns the status code and body.
func Get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// Status reads a supervisor's /status at addr (its -metrics-addr).
func Status(client *http.Client, addr string) (supervisor.Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s supervisor.Snapshot
	err := GetJSON(ctx, client, "http://"+addr+"/status", &s)
	return s, err
}

// WaitStatus polls the supervisor at addr until cond holds.
func WaitStatus(t testing.TB, client *http.Client, addr, what string, cond func(supervisor.Snapshot) bool) supervisor.Snapshot {
	t.Helper()
	var last supervisor.Snapshot
	Poll(t, what, 50*time.Millisecond, func() (bool, error) {
		s, err := Status(client, addr)
		if err != nil {
			return false, err
		}
		last = s
		if cond(s) {
			return true, nil
		}
		return false, errors.New("status: " + s.Summary())
	})
	return last
}

// ClusterPIDs returns the pid of every cluster in s, by cluster id.
func ClusterPIDs(s supervisor.Snapshot) map[int]int {
	pids := map[int]int{}
	for _, c := range s.Clusters {
		pids[c.ID] = c.PID
	}
	return pids
}
