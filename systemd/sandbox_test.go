package systemd

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// The bot of TestUnderSystemd: 6 shards, 2 per cluster, one IDENTIFY
// bucket. The fake refuses IDENTIFYs closer than fakeInterval; the
// supervisor paces at ourInterval, slower by a margin for the fake's
// measurement: it timestamps a frame when its read goroutine gets it,
// and on a busy 2-core machine where three cluster processes start at
// once that came up to ~85 ms late for one frame and not the next.
const (
	shards       = 6
	perCluster   = 2
	clusters     = shards / perCluster
	fakeInterval = 100 * time.Millisecond
	ourInterval  = 300 * time.Millisecond
	// token is distinctive so that a leak anywhere is found.
	token   = "MTA5OTk5.SdTeStToKeN.unit"
	leakKey = "SdTeStToKeN"
	svc     = "shardvisor.service"
)

// TestUnderSystemd runs the unit, installed as the README says, under a
// real systemd booted for the test in its own namespaces, against the fake
// Discord, and takes it through its life: start (returns only once every
// cluster is ready), status line, the token through the credential,
// reload (a rolling restart), ctl restart over the control socket, restart (every session kept through the
// session dir), stop, SIGKILL of the supervisor (restarted,
// no old cluster left), a hung supervisor (the watchdog fires), and a bad
// token (exit 78, not restarted).
//
// The only changes to what an operator installs: the settings file gets
// the fake's URL, a free metrics port and a quick plan appended; a drop-in
// shortens RestartSec so that restarts come within the test's patience;
// the watchdog step shortens WatchdogSec with a drop-in of its own.
func TestUnderSystemd(t *testing.T) {
	if err := harness.CanBootSystemd(); err != nil {
		harness.Missing(t, err.Error())
	}
	bins := harness.Build(t)
	client := harness.Net{}.Client()
	fake := harness.StartFake(t, client, nil, bins.FakeDiscord, "-token", token, "-shards", strconv.Itoa(shards),
		"-guilds", "60", "-identify-interval", fakeInterval.String())
	addr := harness.FreeAddr(t)
	binary, err := os.ReadFile(bins.Shardvisor)
	if err != nil {
		t.Fatal(err)
	}
	settings := string(mustRead(t, envFile)) + fmt.Sprintf(`
# Appended by TestUnderSystemd (the last assignment wins).
SHARDVISOR_API_URL=%s
SHARDVISOR_METRICS_ADDR=%s
SHARDVISOR_SHARDS_PER_CLUSTER=%d
SHARDVISOR_IDENTIFY_INTERVAL=%s
SHARDVISOR_RESTART_DELAY=100ms
SHARDVISOR_RECONNECT_DELAY=100ms
`, fake.URL, addr, perCluster, ourInterval)
	sd := harness.BootSystemd(t, []harness.File{
		{Path: "/usr/local/bin/shardvisor", Data: binary, Mode: 0o755},
		{Path: "/etc/systemd/system/" + svc, Data: mustRead(t, unitFile), Mode: 0o644},
		{Path: "/etc/systemd/system/" + svc + ".d/test.conf", Data: []byte("[Service]\nRestartSec=1s\n"), Mode: 0o644},
		{Path: "/etc/shardvisor/shardvisor.env", Data: []byte(settings), Mode: 0o644},
		{Path: "/etc/shardvisor/discord-token", Data: []byte(token + "\n"), Mode: 0o600},
	})
	st := &state{sd: sd, fake: fake, addr: addr}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of %s:\n%s", svc, sd.Journal(svc))
		}
	})

	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"verify the installed unit", st.verify},
		{"start returns once every cluster is ready", st.start},
		{"status shows the STATUS line", st.statusLine},
		{"the token arrives through the credential only", st.credential},
		{"reload rolls the clusters", st.reload},
		{"ctl restarts one cluster through the control socket", st.ctl},
		{"restart resumes every session", st.restart},
		{"stop stops cleanly", st.stop},
		{"SIGKILL of the supervisor: restarted, no old cluster left", st.sigkill},
		{"a hung supervisor: the watchdog fires", st.watchdog},
		{"a bad token: exit 78, not restarted", st.badToken},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return // each step starts from where the one before left the unit
		}
	}
}

type state struct {
	sd   *harness.Systemd
	fake *harness.Fake
	addr string // the supervisor's -metrics-addr
}

func (st *state) status(t *testing.T) (supervisor.Snapshot, error) {
	t.Helper()
	return harness.Status(harness.Net{}.Client(), st.addr)
}

func (st *state) waitStatus(t *testing.T, what string, cond func(supervisor.Snapshot) bool) supervisor.Snapshot {
	t.Helper()
	return harness.WaitStatus(t, harness.Net{}.Client(), st.addr, what, cond)
}

// systemctl runs systemctl inside and fails the test if it fails.
func (st *state) systemctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := st.sd.Systemctl(args...)
	if err != nil {
		t.Fatalf("systemctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (st *state) verify(t *testing.T) {
	out, err := st.sd.Exec("", "systemd-analyze", "verify", "/etc/systemd/system/"+svc)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
	}
}

// allReady is the state READY=1 promises.
func allReady(s supervisor.Snapshot) bool {
	return s.Ready && s.ClustersReady == clusters && s.ShardsReady == shards
}

func (st *state) start(t *testing.T) {
	began := time.Now()
	st.systemctl(t, "start", svc)
	took := time.Since(began)
	// No waiting here: the very first look must find every cluster ready.
	s, err := st.status(t)
	if err != nil {
		t.Fatalf("/status right after systemctl start: %v", err)
	}
	if !allReady(s) {
		t.Fatalf("systemctl start returned with %s: READY=1 came before every cluster was ready", s.Summary())
	}
	// Six shards in one bucket cannot identify faster than the fake's
	// interval allows: a start that returned sooner did not wait for them.
	if floor := (shards - 1) * fakeInterval; took < floor {
		t.Errorf("systemctl start took %v, less than the %v six paced IDENTIFYs need", took, floor)
	}
	r, err := st.fake.Record()
	if err != nil {
		t.Fatal(err)
	}
	for shard := range shards {
		if l := r.Shard(shard, shards); l.Live != 1 {
			t.Errorf("after start, shard %d has %d live sessions, want 1", shard, l.Live)
		}
	}
	if got := st.sd.Show(svc, "ActiveState"); got != "active" {
		t.Errorf("ActiveState=%s after start", got)
	}
	t.Logf("systemctl start returned after %v with %s", took.Round(time.Millisecond), s.Summary())
}

func (st *state) statusLine(t *testing.T) {
	out, _ := st.sd.Systemctl("status", svc) // exits 0 for an active unit
	want := fmt.Sprintf(`Status: "%d/%d shards ready, %d/%d clusters"`, shards, shards, clusters, clusters)
	if !strings.Contains(out, want) {
		t.Errorf("systemctl status lacks %s:\n%s", want, out)
	}
	if got := st.sd.Show(svc, "StatusText"); got != strings.TrimSuffix(strings.TrimPrefix(want, `Status: "`), `"`) {
		t.Errorf("StatusText=%q", got)
	}
}

func (st *state) credential(t *testing.T) {
	// The fake accepts only this token, and it is in the credential file
	// alone: every session the fake accepted proves it arrived.
	r, err := st.fake.Record()
	if err != nil {
		t.Fatal(err)
	}
	if n := countOutcome(r, discordtest.OutcomeReady); n < shards {
		t.Errorf("%d IDENTIFYs accepted, want %d", n, shards)
	}
	pids := st.sd.UnitPIDs(svc)
	if len(pids) != 1+clusters {
		t.Errorf("%d processes in the unit's cgroup, want the supervisor and %d clusters", len(pids), clusters)
	}
	for _, pid := range pids {
		for _, f := range []string{"cmdline", "environ"} {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f)); strings.Contains(string(b), leakKey) {
				t.Errorf("the token is in /proc/%d/%s", pid, f)
			}
		}
		if uid := procUID(t, pid); uid == 0 {
			t.Errorf("pid %d runs as root; DynamicUser= should give it a user of its own", pid)
		}
	}
	env := st.sd.Show(svc, "Environment")
	if strings.Contains(env, leakKey) || strings.Contains(st.sd.Journal(svc), leakKey) {
		t.Errorf("the token is in the unit's environment or journal")
	}
	if out, _ := st.sd.Systemctl("show", svc); strings.Contains(out, leakKey) {
		t.Errorf("the token is in systemctl show")
	}
	main := st.sd.Show(svc, "MainPID")
	out, err := st.sd.Exec("", "sh", "-c", "tr '\\0' '\\n' </proc/"+main+"/environ")
	if err != nil || !strings.Contains(out, "CREDENTIALS_DIRECTORY=/run/credentials/"+svc) {
		t.Errorf("the supervisor's environment has no CREDENTIALS_DIRECTORY (%v):\n%s", err, out)
	}
}

func procUID(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			uid, _ := strconv.Atoi(strings.Fields(rest)[0])
			return uid
		}
	}
	return -1
}

func countOutcome(r discordtest.Record, o discordtest.Outcome) int {
	n := 0
	for _, id := range r.Identifies {
		if id.Outcome == o {
			n++
		}
	}
	return n
}

func (st *state) reload(t *testing.T) {
	before, err := st.status(t)
	if err != nil {
		t.Fatal(err)
	}
	main := st.sd.Show(svc, "MainPID")
	reloaded := time.Now()
	st.systemctl(t, "reload", svc)
	after := st.waitStatus(t, "every cluster replaced by the rolling restart and ready", func(s supervisor.Snapshot) bool {
		for _, c := range s.Clusters {
			if c.RestartsBy[supervisor.ReasonRolling] < 1 {
				return false
			}
		}
		return allReady(s)
	})
	for i, c := range after.Clusters {
		if c.PID == before.Clusters[i].PID {
			t.Errorf("cluster %d kept pid %d through the reload", c.ID, c.PID)
		}
	}
	if got := st.sd.Show(svc, "MainPID"); got != main {
		t.Errorf("the reload replaced the supervisor (pid %s → %s); it should roll only the clusters", main, got)
	}
	// The sessions were handed over: no IDENTIFY, every shard RESUMEd,
	// none ended; and one cluster at a time: a cluster's RESUMEs all came
	// after the cluster before it had its own.
	r, err := st.fake.Record()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range r.Identifies {
		if id.At.After(reloaded) {
			t.Errorf("shard %d identified during the reload", id.Shard)
		}
	}
	first, last, resumed := map[int]time.Time{}, map[int]time.Time{}, map[int]bool{}
	for _, rr := range r.Resumes {
		if rr.At.Before(reloaded) || rr.Outcome != discordtest.OutcomeResumed {
			continue
		}
		c := rr.Shard / perCluster
		resumed[rr.Shard] = true
		if first[c].IsZero() || rr.At.Before(first[c]) {
			first[c] = rr.At
		}
		if rr.At.After(last[c]) {
			last[c] = rr.At
		}
	}
	if len(resumed) != clusters*perCluster {
		t.Errorf("%d shards RESUMEd during the reload, want all %d", len(resumed), clusters*perCluster)
	}
	for c := 1; c < clusters; c++ {
		if first[c].Before(last[c-1]) {
			t.Errorf("cluster %d resumed (%v) before cluster %d was done (%v): not one at a time",
				c, first[c].Format(time.StampMilli), c-1, last[c-1].Format(time.StampMilli))
		}
	}
	for _, s := range r.Sessions {
		if !s.End.IsZero() && s.End.After(reloaded) {
			t.Errorf("shard %d's session ended during the reload (%d by %s)", s.Shard, s.CloseCode, s.ClosedBy)
		}
	}
	t.Logf("reload: %d clusters rolled in %v", clusters, time.Since(reloaded).Round(time.Millisecond))
}

// ctl: the unit's RuntimeDirectory holds the control socket, mode 0660;
// root's `shardvisor ctl restart 1` finds it by default, replaces cluster
// 1 only, and the journal names the asker's uid.
func (st *state) ctl(t *testing.T) {
	const sock = "/run/shardvisor/control.sock"
	if out, err := st.sd.Exec("", "stat", "-c", "%a %F", sock); err != nil || strings.TrimSpace(out) != "660 socket" {
		t.Errorf("stat %s: %q, %v; want a socket with mode 660", sock, out, err)
	}
	before, err := st.status(t)
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.sd.Exec("", "/usr/local/bin/shardvisor", "ctl", "restart", "1")
	if err != nil || !strings.Contains(out, "cluster 1 restarted and ready") {
		t.Fatalf("shardvisor ctl restart 1: %v\n%s", err, out)
	}
	after, err := st.status(t)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range after.Clusters {
		if changed := c.PID != before.Clusters[i].PID; changed != (c.ID == 1) {
			t.Errorf("cluster %d: pid %d → %d after ctl restart 1", c.ID, before.Clusters[i].PID, c.PID)
		}
	}
	if j := st.sd.Journal(svc); !strings.Contains(j, "restart of one cluster asked") || !strings.Contains(j, "peer_uid=0") {
		t.Errorf("the journal does not name the asker (peer_uid=0):\n%s", lastLines(j, 20))
	}
}

// restart: with the settings shipped (-session-dir in the RuntimeDirectory,
// which the unit keeps across restarts), systemctl restart replaces the
// supervisor and every cluster, and every shard RESUMEs: no IDENTIFY, no
// session closed.
func (st *state) restart(t *testing.T) {
	before, err := st.status(t)
	if err != nil {
		t.Fatal(err)
	}
	main := st.sd.Show(svc, "MainPID")
	restarted := time.Now()
	st.systemctl(t, "restart", svc)
	took := time.Since(restarted)
	s, err := st.status(t)
	if err != nil || !allReady(s) {
		t.Fatalf("systemctl restart returned with %s, %v", s.Summary(), err)
	}
	if got := st.sd.Show(svc, "MainPID"); got == main {
		t.Errorf("the supervisor kept pid %s through the restart", got)
	}
	for i, c := range s.Clusters {
		if c.PID == before.Clusters[i].PID {
			t.Errorf("cluster %d kept pid %d through the restart", c.ID, c.PID)
		}
	}
	r, err := st.fake.Record()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range r.Identifies {
		if id.At.After(restarted) {
			t.Errorf("shard %d identified after the restart", id.Shard)
		}
	}
	resumed := map[int]bool{}
	for _, rr := range r.Resumes {
		if rr.At.After(restarted) && rr.Outcome == discordtest.OutcomeResumed {
			resumed[rr.Shard] = true
		}
	}
	if len(resumed) != shards {
		t.Errorf("%d shards RESUMEd after the restart, want all %d", len(resumed), shards)
	}
	for _, se := range r.Sessions {
		if se.End.After(restarted) && se.CloseCode == 1000 {
			t.Errorf("shard %d's session was closed with 1000 at the restart", se.Shard)
		}
		if !se.Alive() && se.Resumes > 0 {
			t.Errorf("shard %d's session is not live after the restart", se.Shard)
		}
	}
	if _, err := st.sd.Exec("", "test", "-d", "/run/shardvisor/sessions"); err != nil {
		t.Errorf("no /run/shardvisor/sessions while the unit runs: %v", err)
	}
	if j := st.sd.Journal(svc); !strings.Contains(j, "stop: sessions kept in the session dir") {
		t.Errorf("the journal does not say the sessions were kept:\n%s", lastLines(j, 30))
	}
	t.Logf("systemctl restart: every shard ready again after %v, %d RESUMEs, 0 IDENTIFYs", took.Round(time.Millisecond), len(resumed))
}

// stop: a clean stop, nothing killed. With the session dir the sessions
// are left to Discord's timeout rather than closed (SIGTERM cannot tell a
// stop from a restart), and the stop removes the RuntimeDirectory, so the
// next start identifies afresh.
func (st *state) stop(t *testing.T) {
	killsBefore := strings.Count(st.sd.Journal(svc), "Killing process")
	stopping := time.Now()
	st.systemctl(t, "stop", svc)
	t.Logf("systemctl stop took %v", time.Since(stopping).Round(time.Millisecond))
	for prop, want := range map[string]string{"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"} {
		if got := st.sd.Show(svc, prop); got != want {
			t.Errorf("after stop, %s=%s, want %s", prop, got, want)
		}
	}
	if pids := st.sd.UnitPIDs(svc); len(pids) != 0 {
		t.Errorf("processes left in the unit's cgroup after stop: %v", pids)
	}
	r := st.fake.WaitRecord(t, "every session let go", harness.AllClosed)
	for _, s := range r.Sessions {
		if s.End.After(stopping) && (s.CloseCode == 1000 || !s.Resumable) {
			t.Errorf("at the stop, shard %d's session ended with %d by %s (resumable %t); want it left resumable", s.Shard, s.CloseCode, s.ClosedBy, s.Resumable)
		}
	}
	if _, err := st.sd.Exec("", "test", "-e", "/run/shardvisor/sessions"); err == nil {
		t.Error("/run/shardvisor/sessions is still there after the stop")
	}
	if j := st.sd.Journal(svc); strings.Count(j, "Killing process") > killsBefore {
		t.Errorf("systemd had to kill processes at the stop:\n%s", lastLines(j, 30))
	}
}

// startFresh starts the unit from a clean slate (reset-failed also resets
// the start limit counter) and returns its status once ready.
func (st *state) startFresh(t *testing.T) supervisor.Snapshot {
	t.Helper()
	st.sd.Systemctl("reset-failed", svc)
	st.systemctl(t, "start", svc)
	s, err := st.status(t)
	if err != nil || !allReady(s) {
		t.Fatalf("after start: %s, %v", s.Summary(), err)
	}
	return s
}

// clusterPIDs returns the cluster pids of s, as the sandbox sees them
// (the supervisor runs in the sandbox's PID namespace).
func clusterPIDs(s supervisor.Snapshot) []int {
	var pids []int
	for _, pid := range harness.ClusterPIDs(s) {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// waitRestarted waits until systemd has restarted the unit after its
// main process died and the new one is active (READY=1 again).
func (st *state) waitRestarted(t *testing.T, restartsBefore int, oldMain string) {
	t.Helper()
	harness.Poll(t, "systemd to restart the unit and the new supervisor to be ready", 50*time.Millisecond, func() (bool, error) {
		n, _ := strconv.Atoi(st.sd.Show(svc, "NRestarts"))
		active, main := st.sd.Show(svc, "ActiveState"), st.sd.Show(svc, "MainPID")
		return n > restartsBefore && active == "active" && main != oldMain && main != "0",
			fmt.Errorf("NRestarts=%d ActiveState=%s MainPID=%s", n, active, main)
	})
}

func (st *state) sigkill(t *testing.T) {
	before := st.startFresh(t)
	old := clusterPIDs(before)
	main := st.sd.Show(svc, "MainPID")
	restarts, _ := strconv.Atoi(st.sd.Show(svc, "NRestarts"))
	st.systemctl(t, "kill", "--kill-whom=main", "--signal=SIGKILL", svc)
	st.waitRestarted(t, restarts, main)
	after, err := st.status(t)
	if err != nil || !allReady(after) {
		t.Fatalf("after the restart: %s, %v", after.Summary(), err)
	}
	alive := st.sd.NSPIDs()
	for _, pid := range old {
		if alive[pid] {
			t.Errorf("old cluster pid %d still alive after the supervisor was killed and restarted", pid)
		}
	}
	if n := len(st.sd.UnitPIDs(svc)); n != 1+clusters {
		t.Errorf("%d processes in the unit after the restart, want the new supervisor and %d clusters", n, clusters)
	}
	r, err := st.fake.Record()
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.CheckPacing(r); err != nil {
		t.Error(err)
	}
	if got := st.sd.Show(svc, "Result"); got != "success" {
		t.Logf("Result=%s after the restart", got)
	}
}

func (st *state) watchdog(t *testing.T) {
	// WatchdogSec=30s of the unit would make this step wait 30 s; a
	// drop-in shortens it, everything else stays.
	st.sd.Install(harness.File{Path: "/etc/systemd/system/" + svc + ".d/watchdog.conf", Data: []byte("[Service]\nWatchdogSec=3s\n"), Mode: 0o644})
	st.systemctl(t, "daemon-reload")
	st.systemctl(t, "restart", svc)
	t.Cleanup(func() {
		st.sd.Exec("", "rm", "-f", "/etc/systemd/system/"+svc+".d/watchdog.conf")
		st.sd.Systemctl("daemon-reload")
	})
	if got := st.sd.Show(svc, "WatchdogUSec"); got != "3s" {
		t.Fatalf("WatchdogUSec=%s after the drop-in", got)
	}
	if s, err := st.status(t); err != nil || !allReady(s) {
		t.Fatalf("after restart: %s, %v", s.Summary(), err)
	}
	main := st.sd.Show(svc, "MainPID")
	restarts, _ := strconv.Atoi(st.sd.Show(svc, "NRestarts"))
	// The supervisor keeps being healthy (and pinging) while not hung:
	// SIGSTOP hangs it.
	st.systemctl(t, "kill", "--kill-whom=main", "--signal=SIGSTOP", svc)
	st.waitRestarted(t, restarts, main)
	journal := st.sd.Journal(svc)
	if !strings.Contains(journal, "Watchdog timeout") {
		t.Errorf("the journal does not show the watchdog firing:\n%s", lastLines(journal, 30))
	}
	if s, err := st.status(t); err != nil || !allReady(s) {
		t.Errorf("after the watchdog restart: %s, %v", s.Summary(), err)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func (st *state) badToken(t *testing.T) {
	st.systemctl(t, "stop", svc)
	st.sd.Install(harness.File{Path: "/etc/shardvisor/discord-token", Data: []byte("MTA5OTk5.NotTheToken.unit\n"), Mode: 0o600})
	st.sd.Systemctl("reset-failed", svc)
	restarts := st.sd.Show(svc, "NRestarts")
	out, err := st.sd.Systemctl("start", svc)
	if err == nil {
		t.Fatalf("systemctl start with a bad token succeeded:\n%s", out)
	}
	// The unit went to failed at once: had systemd meant to restart it,
	// it would be in auto-restart now.
	for prop, want := range map[string]string{"ExecMainStatus": "78", "Result": "exit-code", "ActiveState": "failed", "SubState": "failed", "NRestarts": restarts} {
		if got := st.sd.Show(svc, prop); got != want {
			t.Errorf("after a bad token, %s=%s, want %s", prop, got, want)
		}
	}
	if j := st.sd.Journal(svc); !strings.Contains(j, "401") {
		t.Errorf("the journal does not say Discord refused the token:\n%s", lastLines(j, 20))
	}
}
