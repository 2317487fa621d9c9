package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shardvisor/shardvisor/discordtest"
)

// TestSupervisorRestartResumes stops a supervisor run with -session-dir
// while events flow and starts it again: the stop leaves every session
// open at Discord and one sealed 0600 record per shard; the new supervisor
// RESUMEs all 8 shards (no IDENTIFY, no session start), each at the
// resume URL with its cache as before (/state), and takes every record;
// the handlers of the two supervisors' processes together see every event
// of every session exactly once.
// Then a record corrupted and one removed: those two shards identify, the
// corrupt one is logged and counted, the other six resume. No session id
// shows in the logs.
func TestSupervisorRestartResumes(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 40, Shards: 8, ChannelsPerGuild: 3, RolesPerGuild: 2, EventRate: 50})
	dir := filepath.Join(t.TempDir(), "sessions")
	addr := freeAddr(t)
	events := filepath.Join(t.TempDir(), "events")
	env := []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_SHARDS_PER_CLUSTER=4", "SHARDVISOR_TEST_EVENTS_FILE=" + events}
	args := append([]string{"run", "-shards", "8", "-session-dir", dir}, fastFlags(fake, addr)...)
	var logs strings.Builder

	p := shardvisor(t, env, args...)
	p.until(t, "ready", ready)
	states := stateOf(t, fake)
	stop := func(p *proc, what string) {
		t.Helper()
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Fatalf("%s: exit %d after SIGTERM", what, code)
		}
		logs.WriteString(p.out.String())
	}
	stop(p, "first run")
	r0 := fake.Record()
	for _, s := range r0.Sessions {
		if !s.Resumable {
			t.Errorf("shard %d's session is not resumable after the stop (close %d by %s)", s.Shard, s.CloseCode, s.ClosedBy)
		}
	}
	records, _ := filepath.Glob(filepath.Join(dir, "shard-*.session"))
	if len(records) != 8 {
		t.Fatalf("%d session records after the stop, want 8: %v", len(records), records)
	}
	for _, r := range records {
		if fi, err := os.Stat(r); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", r, err, fi.Mode().Perm())
		}
	}

	// 1. Every shard RESUMEs with its cache.
	p = shardvisor(t, env, args...)
	p.until(t, "ready after the restart", ready)
	r1 := fake.Record()
	resumes := checkRoll(t, "restart", r0, r1, 0)
	paths := map[uint64]string{}
	for _, c := range r1.Connections {
		paths[c.ID] = c.Path
	}
	for _, rr := range resumes {
		if rr.Outcome != discordtest.OutcomeResumed || paths[rr.Conn] != discordtest.ResumePath {
			t.Errorf("shard %d's RESUME: %s at %s", rr.Shard, rr.Outcome, paths[rr.Conn])
		}
	}
	after := stateOf(t, fake)
	for shard, want := range states {
		if after[shard] != want {
			t.Errorf("shard %d's State: before the restart %q, after %q", shard, want, after[shard])
		}
	}
	if got := metricSum(t, p, "shardvisor_handoff_resumes_total", `cause="supervisor_restart"`); got != 8 {
		t.Errorf("supervisor-restart resumes counted: %v, want 8", got)
	}
	if got := metricSum(t, p, "shardvisor_session_records_total", `outcome="handed_over"`); got != 8 {
		t.Errorf("records handed over: %v, want 8", got)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "shard-*.session")); len(left) != 0 {
		t.Errorf("records left after the start: %v; each is taken once", left)
	}
	eachEventOnce(t, "restart", fake, events)
	fake.SetEventRate(50)
	stop(p, "second run")

	// 2. A corrupt record and a missing one: those shards identify.
	b, err := os.ReadFile(filepath.Join(dir, "shard-0.session"))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x40
	if err := os.WriteFile(filepath.Join(dir, "shard-0.session"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "shard-5.session"))
	r2 := fake.Record()
	p = shardvisor(t, env, args...)
	p.until(t, "ready after a restart with two records gone", ready)
	r3 := fake.Record()
	identified := map[int]bool{}
	for _, ir := range r3.Identifies[len(r2.Identifies):] {
		identified[ir.Shard] = true
	}
	if len(identified) != 2 || !identified[0] || !identified[5] {
		t.Errorf("identified shards %v, want 0 and 5", identified)
	}
	if n := len(r3.Resumes) - len(r2.Resumes); n != 6 {
		t.Errorf("%d RESUMEs, want 6", n)
	}
	if r3.MaxLive > 1 {
		t.Errorf("a shard had %d live sessions at once", r3.MaxLive)
	}
	if !p.out.WaitFor("session record discarded; the shard identifies", patience) {
		t.Error("the corrupt record's discard is not logged")
	}
	if got := metricSum(t, p, "shardvisor_session_records_total", `outcome="corrupt"`); got != 1 {
		t.Errorf("corrupt records counted: %v, want 1", got)
	}
	if got := metricSum(t, p, "shardvisor_handoff_fallbacks_total", `cause="supervisor_restart"`); got != 2 {
		t.Errorf("supervisor-restart fallbacks counted: %v, want 2 (no session for shards 0 and 5)", got)
	}
	pingEach(t, fake, []int{0, 5, 7}, 8)
	stop(p, "third run")

	all := logs.String()
	noLeak(t, "the logs", all)
	for _, s := range fake.Record().Sessions {
		if strings.Contains(all, s.ID) {
			t.Errorf("a session id appears in the logs")
		}
	}
}
