package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// File is a file to install in a sandbox or a root file system.
type File struct {
	Path string // absolute, inside
	Data []byte
	Mode os.FileMode
	UID  int // owner; 0 is root
	GID  int
}

// CanBootSystemd returns nil if BootSystemd can boot a systemd here, or
// the reason it cannot.
func CanBootSystemd() error {
	if os.Geteuid() != 0 {
		return errors.New("booting a throwaway systemd in namespaces needs root")
	}
	if systemdPath() == "" {
		return errors.New("no systemd binary (at /lib/systemd/systemd or /usr/lib/systemd/systemd)")
	}
	for _, tool := range []string{"unshare", "nsenter", "systemctl", "journalctl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("no %s (util-linux and systemd provide them)", tool)
		}
	}
	if _, err := cgroup2Root(); err != nil {
		return err
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
		return errors.New("no overlay file system: the sandbox installs the unit under an overlay of /etc")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "--mount", "--cgroup", "--propagation", "private", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("cannot make PID, mount and cgroup namespaces here (a container without CAP_SYS_ADMIN?): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func systemdPath() string {
	for _, p := range []string{"/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// cgroup2Root returns the mount point of the cgroup2 hierarchy: on a pure
// v2 host /sys/fs/cgroup, on a hybrid one /sys/fs/cgroup/unified.
func cgroup2Root() (string, error) {
	const cgroup2Magic = 0x63677270
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if err := syscall.Statfs(p, &st); err == nil && st.Type == cgroup2Magic {
			return p, nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted (at /sys/fs/cgroup or /sys/fs/cgroup/unified): systemd needs one")
}

// Systemd is a throwaway systemd booted by BootSystemd.
type Systemd struct {
	t      testing.TB
	dir    string
	cgroup string // host path of the sandbox's cgroup (the root of its cgroup namespace)
	proc   *Proc  // the unshare process; its only child is the sandbox's PID 1
	pid1   int    // host pid of the sandbox's PID 1
}

// BootSystemd boots a real systemd as PID 1 of new PID, mount, cgroup,
// UTS and IPC namespaces, sharing the host's network, with files
// installed first. Files must lie under /etc or /usr/local: those two are
// overlays inside the sandbox (the host's own are never written), so the
// unit under test is installed exactly where an operator installs it
// (/etc/systemd/system, /usr/local/bin, /etc/shardvisor). The boot units
// that would act on the host (tmpfiles, sysctl, sysusers, ...) are masked.
// It skips the test if CanBootSystemd says no.
func BootSystemd(t testing.TB, files []File) *Systemd {
	t.Helper()
	if err := CanBootSystemd(); err != nil {
		Missing(t, err.Error())
	}
	dir := TempDir(t, 0o700)
	for _, f := range files {
		if !strings.HasPrefix(f.Path, "/etc/") && !strings.HasPrefix(f.Path, "/usr/local/") {
			t.Fatalf("sandbox file %s: only /etc and /usr/local can be installed into", f.Path)
		}
		if err := writeFile(filepath.Join(dir, "root", f.Path), f); err != nil {
			t.Fatal(err)
		}
	}
	cg2, _ := cgroup2Root()
	var suffix [6]byte
	rand.Read(suffix[:])
	s := &Systemd{t: t, dir: dir, cgroup: filepath.Join(cg2, "shardvisor-sdh-"+hex.EncodeToString(suffix[:]))}
	if err := os.Mkdir(s.cgroup, 0o755); err != nil {
		t.Fatalf("cgroup for the sandbox: %v", err)
	}
	t.Cleanup(s.removeCgroup) // runs last, once every process is gone
	// The shell joins the new cgroup before unshare makes the cgroup
	// namespace, so that the sandbox's cgroup root is that cgroup.
	s.proc = Start(t, nil, nil, "sh", "-c",
		`echo $$ >"$1/cgroup.procs" && exec unshare --kill-child --pid --fork --mount --uts --ipc --cgroup --propagation private --mount-proc bash -c "$2" inner "$3" "$4"`,
		"sh", s.cgroup, innerScript, dir, systemdPath())
	t.Cleanup(s.poweroff) // runs before Start's own cleanup kills what is left

	// Booted when PID 1 exists and its private bus socket is there; then
	// systemctl can wait for the boot to finish.
	Poll(t, "the sandbox's systemd to listen", 20*time.Millisecond, func() (bool, error) {
		select {
		case <-s.proc.Done():
			t.Fatalf("sandbox ended while booting:\n%s\n%s", s.proc.Output(), s.log())
		default:
		}
		if s.pid1 == 0 {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.proc.Cmd.Process.Pid, s.proc.Cmd.Process.Pid))
			if err != nil {
				return false, err
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				s.pid1, _ = strconv.Atoi(f[0])
			}
			if s.pid1 == 0 {
				return false, errors.New("no PID 1 yet")
			}
		}
		fi, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/systemd/private", s.pid1))
		return err == nil && fi.Mode()&fs.ModeSocket != 0, err
	})
	out, err := s.Systemctl("is-system-running", "--wait")
	if state := strings.TrimSpace(out); state != "running" && state != "degraded" {
		t.Fatalf("sandbox's systemd: is-system-running %q (%v)\n%s", state, err, s.log())
	}
	return s
}

// log returns what the sandbox's PID 1 printed.
func (s *Systemd) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "pid1.log"))
	return string(b) + s.proc.Output()
}

// Exec runs argv inside the sandbox's namespaces (not in a unit), with
// stdin as its standard input, and returns its combined output.
func (s *Systemd) Exec(stdin string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*Patience)
	defer cancel()
	nsenter := []string{"nsenter", "-t", strconv.Itoa(s.pid1), "-m", "-p", "-C", "--"}
	return Run(ctx, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}, stdin, append(nsenter, argv...)...)
}

// Systemctl runs systemctl inside.
func (s *Systemd) Systemctl(args ...string) (string, error) {
	return s.Exec("", append([]string{"systemctl", "--no-pager"}, args...)...)
}

// Show returns a unit's property.
func (s *Systemd) Show(unit, property string) string {
	out, err := s.Systemctl("show", "-p", property, "--value", unit)
	if err != nil {
		s.t.Fatalf("systemctl show %s: %v: %s", property, err, out)
	}
	return strings.TrimSpace(out)
}

// Journal returns the unit's journal, in full.
func (s *Systemd) Journal(unit string) string {
	out, _ := s.Exec("", "journalctl", "--no-pager", "-o", "cat", "-u", unit)
	return out
}

// Install writes a file inside the sandbox (through standard input: its
// content never appears on a command line).
func (s *Systemd) Install(f File) {
	s.t.Helper()
	script := fmt.Sprintf(`mkdir -p "$(dirname "$1")" && cat >"$1.new" && chown %d:%d "$1.new" && chmod %o "$1.new" && mv "$1.new" "$1"`, f.UID, f.GID, f.Mode.Perm())
	if out, err := s.Exec(string(f.Data), "sh", "-c", script, "sh", f.Path); err != nil {
		s.t.Fatalf("install %s in the sandbox: %v: %s", f.Path, err, out)
	}
}

// UnitPIDs returns the host pids of every process in the unit's cgroup.
func (s *Systemd) UnitPIDs(unit string) []int {
	b, err := os.ReadFile(filepath.Join(s.cgroup, "system.slice", unit, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// NSPIDs returns the pids, as the sandbox sees them, of processes inside.
func (s *Systemd) NSPIDs() map[int]bool {
	out, err := s.Exec("", "sh", "-c", "cd /proc && echo [0-9]*")
	if err != nil {
		s.t.Fatalf("list the sandbox's processes: %v: %s", err, out)
	}
	pids := map[int]bool{}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids[pid] = true
		}
	}
	return pids
}

// poweroff powers the sandbox off, or sends SIGKILL to its PID 1 if that
// takes too long: the kernel then kills every process of the namespace.
func (s *Systemd) poweroff() {
	select {
	case <-s.proc.Done():
		return
	default:
	}
	if s.pid1 != 0 {
		s.Systemctl("--no-block", "poweroff")
	}
	select {
	case <-s.proc.Done():
	case <-time.After(30 * time.Second):
		s.t.Logf("sandbox did not power off within 30s; killing its PID 1")
		if s.pid1 != 0 {
			syscall.Kill(s.pid1, syscall.SIGKILL)
		}
		s.proc.Wait(Patience)
	}
}

// removeCgroup removes the sandbox's cgroups, deepest first, once they
// are empty (their processes gone and reaped).
func (s *Systemd) removeCgroup() {
	deadline := time.Now().Add(Patience)
	for {
		err := removeCgroupTree(s.cgroup)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Errorf("sandbox cgroup %s left behind: %v", s.cgroup, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func removeCgroupTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("rmdir %s: %w", dirs[i], err)
		}
	}
	return nil
}

func writeFile(path string, f File) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, f.Data, f.Mode.Perm()); err != nil {
		return err
	}
	if err := os.Chmod(path, f.Mode.Perm()); err != nil { // not subject to the umask
		return err
	}
	if f.UID != 0 || f.GID != 0 {
		return os.Chown(path, f.UID, f.GID)
	}
	return nil
}

// innerScript runs as PID 1 of the new namespaces, sets the sandbox up,
// then execs systemd. $1 is the sandbox's state directory (root/ holds the
// files to install), $2 the systemd binary. Everything it mounts lives in
// the sandbox's private mount namespace and goes away with it.
const innerScript = `set -eu
R=$1 SYSTEMD=$2
exec >"$R/pid1.log" 2>&1
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/systemd/system /run/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' >/run/systemd/journald.conf.d/volatile.conf
printf '[Unit]\nDescription=shardvisor test sandbox\nDefaultDependencies=no\nWants=systemd-journald.service\n' >/run/systemd/system/sdharness.target
# The boot targets' units act on the HOST (tmpfiles wipes /tmp, sysctl,
# binfmt, sysusers, timers, ...): runtime-mask everything they pull in.
for t in sysinit local-fs local-fs-pre swap sockets timers paths basic multi-user graphical \
         network network-online network-pre remote-fs cryptsetup getty; do
  for u in /etc/systemd/system/$t.target.wants/* /lib/systemd/system/$t.target.wants/* /usr/lib/systemd/system/$t.target.wants/*; do
    [ -e "$u" ] || continue; n=${u##*/}
    case $n in systemd-journald*|*.target) continue ;; esac
    [ -e /run/systemd/system/$n ] || ln -s /dev/null /run/systemd/system/$n
  done
done
for n in systemd-remount-fs.service systemd-fsck-root.service; do ln -sf /dev/null /run/systemd/system/$n; done
# Belt and braces: the host-modifying helpers are /bin/true in here.
for b in /usr/bin/systemd-tmpfiles /usr/bin/systemd-sysusers /usr/bin/systemd-firstboot \
         /usr/bin/systemd-machine-id-setup /lib/systemd/systemd-sysctl /lib/systemd/systemd-binfmt \
         /lib/systemd/systemd-modules-load /lib/systemd/systemd-timesyncd /lib/systemd/systemd-random-seed \
         /lib/systemd/systemd-update-utmp /lib/systemd/systemd-remount-fs /lib/systemd/systemd-pstore; do
  [ -e $b ] && mount --bind /bin/true $b
done
mount -t tmpfs tmpfs /var/log/journal                         # never the host's journal
mount -t tmpfs -o mode=755,nosuid tmpfs /dev                  # a private /dev
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $n; mknod -m 666 /dev/$1 c $2 $3; done
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s pts/ptmx /dev/ptmx; ln -s /proc/self/fd /dev/fd
umount -R /sys/fs/cgroup                                      # the host's v1 or hybrid mounts
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup         # pure v2, rooted at our cgroup namespace
# /etc and /usr/local are overlays whose upper layers live in a tmpfs of
# this namespace: the unit and its files are installed where an operator
# puts them, and the host's never change.
mkdir -p "$R/ovl"
mount -t tmpfs -o mode=700 tmpfs "$R/ovl"
for d in etc usr/local; do
  mkdir -p "$R/ovl/$d/upper" "$R/ovl/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$R/ovl/$d/upper,workdir=$R/ovl/$d/work" "/$d"
done
if [ -d "$R/root" ]; then cp -a "$R/root/." /; fi
mount --make-rshared /    # LoadCredential= needs /run propagation (our own peer groups, not the host's)
exec env -i container=shardvisor-harness PATH=/usr/sbin:/usr/bin:/sbin:/bin \
     "$SYSTEMD" --system --unit=sdharness.target --show-status=no
`
