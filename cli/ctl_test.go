package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// TestCtl runs the supervisor as systemd would give it a runtime
// directory, and an operator's shardvisor ctl against it: the socket is
// there with mode 0660; status prints the table; restart replaces one
// cluster and answers once it is ready, logged with the asker's uid; roll
// begins a rolling restart.
func TestCtl(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 40, Shards: 4, MaxConcurrency: 2})
	addr := freeAddr(t)
	runtimeDir := t.TempDir()
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken, "RUNTIME_DIRECTORY=" + runtimeDir},
		append([]string{"run", "-shards", "auto", "-shards-per-cluster", "2"}, fastFlags(fake, addr)...)...)
	p.until(t, "ready", ready)
	sock := filepath.Join(runtimeDir, "control.sock")
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatalf("no control socket under $RUNTIME_DIRECTORY: %v", err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket %v, want a socket with mode 0660", fi.Mode())
	}
	env := []string{"RUNTIME_DIRECTORY=" + runtimeDir} // ctl finds it as the service would

	out, code := command(t, env, "ctl", "status")
	if code != 0 || !strings.Contains(out, "READY  4/4 shards ready, 2/2 clusters") {
		t.Errorf("ctl status: exit %d\n%s", code, out)
	}
	out, code = command(t, nil, "ctl", "-control-socket", sock, "restart", "1")
	if code != 0 || !strings.Contains(out, "cluster 1 restarted and ready") {
		t.Fatalf("ctl restart 1: exit %d\n%s", code, out)
	}
	snap := p.until(t, "cluster 1 replaced and its old process retired", func(s supervisor.Snapshot) bool {
		return s.Clusters[1].Generation == 2 && s.Clusters[1].RestartsBy[supervisor.ReasonRolling] == 1
	})
	if snap.Clusters[0].Generation != 1 || snap.Clusters[1].RestartsBy[supervisor.ReasonRolling] != 1 {
		t.Errorf("after ctl restart 1: generations %d, %d, restarts of 1 %v", snap.Clusters[0].Generation, snap.Clusters[1].Generation, snap.Clusters[1].RestartsBy)
	}
	if !p.out.WaitFor("peer_uid="+strconv.Itoa(os.Getuid()), patience) {
		t.Errorf("the restart is not logged with the asker's uid")
	}
	for _, line := range strings.Split(p.out.String(), "\n") {
		if strings.Contains(line, "restart of one cluster asked") && !strings.Contains(line, "peer_uid="+strconv.Itoa(os.Getuid())) {
			t.Errorf("logged without the peer's uid: %s", line)
		}
	}
	out, code = command(t, env, "ctl", "roll")
	if code != 0 || !strings.Contains(out, "rolling restart begun") {
		t.Errorf("ctl roll: exit %d\n%s", code, out)
	}
	p.until(t, "the rolling restart done", func(s supervisor.Snapshot) bool {
		return s.Ready && s.Clusters[0].Generation == 2 && s.Clusters[1].Generation == 3
	})
	out, code = command(t, env, "ctl", "restart", "9")
	if code != 1 || !strings.Contains(out, "not one of this supervisor's clusters (0-1)") {
		t.Errorf("ctl restart 9: exit %d\n%s", code, out)
	}
	p.signal(t, 15)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the control socket outlives the supervisor: %v", err)
	}
}

// TestCtlErrors: what an operator sees for a mistake, without a supervisor.
func TestCtlErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.sock")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ctl", "-control-socket", missing, "status"}, 1, "no control socket at " + missing + ": is the supervisor running"},
		{[]string{"ctl", "-control-socket", missing, "reboot"}, 78, `unknown command "reboot"; commands: status, roll, restart CLUSTER`},
		{[]string{"ctl", "-control-socket", missing}, 78, "no command; commands: status, roll, restart CLUSTER"},
		{[]string{"ctl", "-control-socket", missing, "restart"}, 78, "restart takes one cluster id"},
		{[]string{"ctl", "-control-socket", missing, "restart", "x"}, 78, `restart "x": a cluster id is a non-negative integer`},
	} {
		out, code := command(t, nil, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("shardvisor %v: exit %d, %q; want %d and %q", c.args, code, out, c.code, c.want)
		}
	}
	// A socket left by a supervisor that died: nobody listens.
	stale := filepath.Join(dir, "stale.sock")
	l, err := supervisor.ListenControl(stale)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	os.WriteFile(stale, nil, 0o600) // the path exists, but is no socket one can reach
	if out, code := command(t, nil, "ctl", "-control-socket", stale, "status"); code != 1 || !strings.Contains(out, "control socket "+stale) {
		t.Errorf("ctl on a dead socket: exit %d, %q", code, out)
	}
}

func TestControlSocketPath(t *testing.T) {
	env := func(v string, ok bool) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if k != "RUNTIME_DIRECTORY" {
				return "", false
			}
			return v, ok
		}
	}
	for _, c := range []struct {
		flag, dir string
		set       bool
		want      string
	}{
		{"auto", "/run/shardvisor", true, "/run/shardvisor/control.sock"},
		{"auto", "/run/a:/run/b", true, "/run/a/control.sock"},
		{"auto", "", false, ""},
		{"", "/run/shardvisor", true, ""},
		{"/tmp/x.sock", "/run/shardvisor", true, "/tmp/x.sock"},
	} {
		if got := controlSocketPath(c.flag, env(c.dir, c.set)); got != c.want {
			t.Errorf("-control-socket %q, RUNTIME_DIRECTORY %q: %q, want %q", c.flag, c.dir, got, c.want)
		}
	}
}
