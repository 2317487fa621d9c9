package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CanRunContainer returns nil if StartContainer can run here, or the
// reason it cannot.
func CanRunContainer() error {
	if os.Geteuid() != 0 {
		return errors.New("a PID namespace with a chroot needs root")
	}
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("no %s (Debian: util-linux)", tool)
		}
	}
	out, err := exec.Command("unshare", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--root") || !strings.Contains(string(out), "--setuid") {
		return errors.New("this unshare lacks --root or --setuid (util-linux 2.38 has both)")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "--mount", "--mount-proc", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("cannot make PID and mount namespaces here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Rootfs builds an image-like root file system in a new directory: the
// files given, /proc (mounted by StartContainer), /tmp (1777) and
// /dev/null, as a container runtime provides them.
func Rootfs(t testing.TB, files []File) string {
	t.Helper()
	root := TempDir(t, 0o755)
	for _, d := range []string{"proc", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(root, "dev", "null"), syscall.S_IFCHR|0o666, int(mkdev(1, 3))); err != nil {
		t.Fatalf("mknod /dev/null in the root file system: %v", err)
	}
	os.Chmod(filepath.Join(root, "dev", "null"), 0o666) // not subject to the umask
	for _, f := range files {
		if err := writeFile(filepath.Join(root, f.Path), f); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func mkdev(major, minor uint32) uint64 {
	return uint64(major)<<8 | uint64(minor)
}

// ContainerConfig says what StartContainer runs.
type ContainerConfig struct {
	Rootfs   string   // from Rootfs
	Argv     []string // ENTRYPOINT and CMD: paths inside the root file system
	Env      []string // the whole environment
	UID, GID int      // USER
	Net      Net      // the network namespace to run in; the host's if zero
}

// Container is a command running as PID 1 of its own PID and mount
// namespaces, chrooted into a root file system, as a container runtime
// runs an image's ENTRYPOINT.
type Container struct {
	cfg  ContainerConfig
	proc *Proc // unshare; its child is PID 1
	pid1 int   // host pid of PID 1
}

// StartContainer starts cfg.Argv as PID 1 (unshare --pid --fork
// --mount-proc --root --setuid --setgid) and returns once it runs. At the
// end of the test PID 1 gets SIGKILL if still there, and the kernel ends
// every process of its namespace with it. It skips the test if
// CanRunContainer says no.
func StartContainer(t testing.TB, cfg ContainerConfig) *Container {
	t.Helper()
	if err := CanRunContainer(); err != nil {
		Missing(t, err.Error())
	}
	argv := append(cfg.Net.Prefix(), "unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc",
		"--root="+cfg.Rootfs, "--setgid="+strconv.Itoa(cfg.GID), "--setuid="+strconv.Itoa(cfg.UID), "--")
	c := &Container{cfg: cfg, proc: Start(t, cfg.Env, nil, append(argv, cfg.Argv...)...)}
	t.Cleanup(func() {
		if c.pid1 != 0 {
			syscall.Kill(c.pid1, syscall.SIGKILL)
		}
	})
	// unshare's child, once it has execed cfg.Argv[0] (the comm changes).
	want := filepath.Base(cfg.Argv[0])
	if len(want) > 15 {
		want = want[:15]
	}
	Poll(t, "the container's PID 1 to run "+cfg.Argv[0], 10*time.Millisecond, func() (bool, error) {
		select {
		case <-c.proc.Done():
			t.Fatalf("container exited at start: %v\n%s", c.proc.err, c.proc.Output())
		default:
		}
		for _, pid := range Children(c.proc.Cmd.Process.Pid) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == want {
				c.pid1 = pid
				return true, nil
			}
		}
		return false, errors.New("not yet")
	})
	return c
}

// PID1 is the host pid of the container's PID 1.
func (c *Container) PID1() int { return c.pid1 }

// Signal sends sig to the container's PID 1, as `docker kill -s` does.
func (c *Container) Signal(sig syscall.Signal) error { return syscall.Kill(c.pid1, sig) }

// Wait waits up to timeout for PID 1 to exit and returns its exit status.
func (c *Container) Wait(timeout time.Duration) (int, error) { return c.proc.Wait(timeout) }

// Output is what the container wrote to standard output and error.
func (c *Container) Output() string { return c.proc.Output() }

// Exec runs argv inside the container, as `docker exec` does: in its
// namespaces and root, as its user, with its environment.
func (c *Container) Exec(argv ...string) (string, error) {
	ctx, cancel := Deadline()
	defer cancel()
	ns := []string{"nsenter", "--target", strconv.Itoa(c.pid1), "--pid", "--mount", "--net", "--root", "--wd=/",
		"--setgid=" + strconv.Itoa(c.cfg.GID), "--setuid=" + strconv.Itoa(c.cfg.UID), "--"}
	return Run(ctx, c.cfg.Env, "", append(ns, argv...)...)
}

// Children returns the pids of pid's children.
func Children(pid int) []int {
	var kids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// ProcStat is what /proc/PID/stat says of a process.
type ProcStat struct {
	PID, PPID int
	Comm      string
	State     byte // R, S, Z, ...
}

// Stat reads /proc/PID/stat.
func Stat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 2 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	ppid, _ := strconv.Atoi(f[1])
	return ProcStat{PID: pid, PPID: ppid, Comm: s[open+1 : closing], State: f[0][0]}, nil
}

// ChildStats returns the state of every child of pid.
func ChildStats(pid int) []ProcStat {
	var out []ProcStat
	for _, k := range Children(pid) {
		if st, err := Stat(k); err == nil {
			out = append(out, st)
		}
	}
	return out
}
