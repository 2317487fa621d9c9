package supervisor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlSocketMode: the socket is 0660 (the service's user and
// group), a stale one is replaced, a live one refused, and Close removes it.
func TestControlSocketMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	l, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket %v, want a socket with mode 0660", fi.Mode())
	}
	if _, err := ListenControl(path); err == nil || !strings.Contains(err.Error(), "another process listens") {
		t.Errorf("a second ListenControl on a live socket: %v, want it refused", err)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("after Close the socket is still there: %v", err)
	}
	// A socket left by a supervisor that was killed: bound, nobody listening.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err = ListenControl(path)
	if err != nil {
		t.Fatalf("ListenControl over a stale socket: %v", err)
	}
	l.Close()
	os.WriteFile(path, nil, 0o600)
	if _, err := ListenControl(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("ListenControl over a plain file: %v, want it refused", err)
	}
}

// ask sends one request line and reads the reply.
func ask(t *testing.T, path, line string) ControlReply {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, line)
	var rep ControlReply
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&rep); err != nil {
		t.Fatalf("reply to %s: %v", line, err)
	}
	return rep
}

// TestControlRestartLogsPeer: restart over the socket replaces one
// cluster, answers once it is ready, and is logged with the asker's uid;
// unknown commands and bad lines get a clear error.
func TestControlRestartLogsPeer(t *testing.T) {
	tr := start(t, 2, "well")
	logs := tr.logs
	tr.waitFor(t, "all ready", ready)
	path := filepath.Join(t.TempDir(), "control.sock")
	l, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- tr.s.ServeControl(l) }()
	defer func() {
		l.Close()
		if err := <-served; err != nil {
			t.Errorf("ServeControl: %v", err)
		}
	}()

	rep := ask(t, path, `{"command":"restart","cluster":1}`)
	if rep.Error != "" || !strings.Contains(rep.Message, "cluster 1 restarted and ready") {
		t.Fatalf("restart 1: %+v", rep)
	}
	snap := tr.s.Store().Snapshot()
	if snap.Clusters[1].Generation != 2 || !snap.Clusters[1].Ready() || snap.Clusters[0].Generation != 1 {
		t.Errorf("after restart 1: generations %d, %d (want 1, 2), cluster 1 %s", snap.Clusters[0].Generation, snap.Clusters[1].Generation, snap.Clusters[1].State)
	}
	uid := fmt.Sprintf("peer_uid=%d", os.Getuid())
	var logged bool
	for _, line := range strings.Split(logs.String(), "\n") {
		logged = logged || (strings.Contains(line, "restart of one cluster asked") && strings.Contains(line, uid) && strings.Contains(line, "cluster_id=1"))
	}
	if !logged {
		t.Errorf("no log line of the restart with %s:\n%s", uid, logs)
	}
	var event bool
	for _, e := range snap.Events {
		event = event || (e.Kind == EventControl && e.ClusterID == 1 && strings.Contains(e.Message, fmt.Sprintf("uid %d", os.Getuid())))
	}
	if !event {
		t.Errorf("no control event for the restart: %+v", snap.Events)
	}

	if rep := ask(t, path, `{"command":"restart","cluster":7}`); !strings.Contains(rep.Error, "not one of this supervisor's clusters (0-1)") {
		t.Errorf("restart 7: %+v", rep)
	}
	if rep := ask(t, path, `{"command":"reboot"}`); !strings.Contains(rep.Error, `unknown command "reboot"; commands: status, roll, restart CLUSTER`) {
		t.Errorf("unknown command: %+v", rep)
	}
	if rep := ask(t, path, `restart 1`); !strings.Contains(rep.Error, "a request is one JSON line") {
		t.Errorf("not JSON: %+v", rep)
	}
	if rep := ask(t, path, `{"command":"status"}`); rep.Status == nil || len(rep.Status.Clusters) != 2 {
		t.Errorf("status: %+v", rep)
	}
}
