package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// TestRollingRestartHandsOff takes 8 shards in 2 cluster processes through
// four rolling restarts while events flow: the first hands every session
// and State over (0 IDENTIFYs, 8 RESUMEs, the State the same in the new
// processes); in the second one RESUME is refused and that shard falls
// back to a paced IDENTIFY, counted; the third rolls to a binary that
// exits at once and the fourth to one that dies after its first RESUME:
// both times every shard stays served by the old process, nothing is
// identified, and the roll says it stopped.
func TestRollingRestartHandsOff(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 40, Shards: 8, ChannelsPerGuild: 3, RolesPerGuild: 2, EventRate: 50})
	dir := t.TempDir()
	broken, crash := filepath.Join(dir, "broken"), filepath.Join(dir, "crash")
	addr := freeAddr(t)
	events := filepath.Join(dir, "events")
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_SHARDS_PER_CLUSTER=4",
		"SHARDVISOR_TEST_BROKEN_FILE=" + broken, "SHARDVISOR_TEST_CRASH_FILE=" + crash, "SHARDVISOR_TEST_EVENTS_FILE=" + events},
		append([]string{"run", "-shards", "8"}, fastFlags(fake, addr)...)...)
	start := p.until(t, "ready", ready)
	if len(start.Clusters) != 2 {
		t.Fatalf("%d clusters, want 2", len(start.Clusters))
	}
	states := stateOf(t, fake)
	r0 := fake.Record()

	rolled := func(n int) func(supervisor.Snapshot) bool {
		return func(s supervisor.Snapshot) bool {
			for _, c := range s.Clusters {
				if c.RestartsBy[supervisor.ReasonRolling] != n {
					return false
				}
			}
			return s.Ready
		}
	}

	// 1. Every session and State handed over, while /ping is asked on a
	// shard of each cluster, one after the other: each answered once.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pings := make(chan int, 2)
	for _, shard := range []int{0, 7} {
		go func() {
			n := 0
			defer func() { pings <- n }()
			for ctx.Err() == nil {
				ictx, icancel := context.WithTimeout(context.Background(), patience)
				rep, err := fake.Interact(ictx, discordtest.Interaction{GuildID: fake.GuildIDsOf(shard, 8)[1], Command: "ping"})
				icancel()
				if err != nil || rep.Content != "Pong!" {
					t.Errorf("/ping on shard %d during the roll: %+v, %v", shard, rep, err)
					return
				}
				n++
			}
		}()
	}
	p.signal(t, syscall.SIGHUP)
	snap1 := p.until(t, "the first rolling restart", rolled(1))
	cancel()
	t.Logf("/ping answered %d and %d times during the roll", <-pings, <-pings)
	r1 := fake.Record()
	for _, ir := range r1.Interactions {
		if ir.Command == "ping" && len(ir.Replies) != 1 {
			t.Errorf("interaction on shard %d answered %d times", ir.Shard, len(ir.Replies))
		}
	}
	resumes := checkRoll(t, "first roll", r0, r1, 0)
	paths := map[uint64]string{}
	for _, c := range r1.Connections {
		paths[c.ID] = c.Path
	}
	for _, rr := range resumes {
		if rr.Outcome != discordtest.OutcomeResumed {
			t.Errorf("first roll: shard %d's RESUME: %s", rr.Shard, rr.Outcome)
		}
		if paths[rr.Conn] != discordtest.ResumePath {
			t.Errorf("first roll: shard %d resumed at %s, not at READY's resume_gateway_url", rr.Shard, paths[rr.Conn])
		}
	}
	if len(resumes) != 8 {
		t.Errorf("first roll: %d RESUMEs, want 8", len(resumes))
	}
	for i, c := range snap1.Clusters {
		if c.PID == start.Clusters[i].PID {
			t.Errorf("cluster %d kept pid %d", c.ID, c.PID)
		}
	}
	after := stateOf(t, fake)
	for shard, want := range states {
		if after[shard] != want {
			t.Errorf("shard %d's State: before the roll %q, after %q", shard, want, after[shard])
		}
	}
	for _, s := range r1.Sessions {
		if !s.Alive() {
			t.Errorf("session of shard %d ended (close %d by %s)", s.Shard, s.CloseCode, s.ClosedBy)
		}
	}
	if got, want := metricSum(t, p, "shardvisor_handoff_resumes_total", ""), 8.0; got != want {
		t.Errorf("shardvisor_handoff_resumes_total = %v, want %v", got, want)
	}
	eachEventOnce(t, "first roll", fake, events)
	fake.SetEventRate(50)

	// 2. A RESUME refused: a paced IDENTIFY with a fresh State, counted.
	fake.RefuseResumes(1)
	p.signal(t, syscall.SIGHUP)
	p.until(t, "the second rolling restart", rolled(2))
	r2 := fake.Record()
	resumes = checkRoll(t, "second roll", r1, r2, 1)
	refused := 0
	for _, rr := range resumes {
		if rr.Outcome != discordtest.OutcomeResumed {
			refused++
		}
	}
	if len(resumes) != 8 || refused != 1 {
		t.Errorf("second roll: %d RESUMEs, %d refused; want 8 and 1", len(resumes), refused)
	}
	if got := metricSum(t, p, "shardvisor_handoff_fallbacks_total", FallbackLabel); got != 1 {
		t.Errorf("fallbacks (resume_refused) = %v, want 1", got)
	}
	if !p.out.WaitFor("RESUME refused; identifying with a fresh State", patience) {
		t.Error("the fallback is not logged")
	}
	if after := stateOf(t, fake); len(after) != 8 {
		t.Errorf("State after the fallback: %v", after)
	} else {
		for shard, want := range states {
			if after[shard] != want {
				t.Errorf("shard %d's State after the second roll: %q, want %q", shard, after[shard], want)
			}
		}
	}
	checkPacing(t, r2)

	// 3. and 4. A roll to a binary that exits at once, then to one that
	// dies after it took the handoff: the old processes serve on.
	for _, c := range []struct{ name, file, says string }{
		{"a binary that exits at once", broken, "exited before it said hello"},
		{"a binary that dies after its first RESUME", crash, "exited before it was ready"},
	} {
		before := p.until(t, "ready", ready)
		rb := fake.Record()
		if err := os.WriteFile(c.file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		p.signal(t, syscall.SIGHUP)
		if !p.out.WaitFor(c.says, patience) || !p.out.WaitFor("rolling restart stopped", patience) {
			t.Fatalf("%s: the roll does not say it stopped", c.name)
		}
		os.Remove(c.file)
		s := p.until(t, "every shard ready after "+c.name, ready)
		for i, cl := range s.Clusters {
			if cl.PID != before.Clusters[i].PID {
				t.Errorf("%s: cluster %d's pid %d, was %d", c.name, cl.ID, cl.PID, before.Clusters[i].PID)
			}
		}
		ra := fake.Record()
		if n := len(ra.Identifies) - len(rb.Identifies); n != 0 {
			t.Errorf("%s: %d IDENTIFYs", c.name, n)
		}
		if ra.MaxLive > 1 {
			t.Errorf("%s: a shard had %d live sessions", c.name, ra.MaxLive)
		}
		if got := stateOf(t, fake); len(got) != 8 {
			t.Errorf("%s: State %v", c.name, got)
		}
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	logs := p.out.String()
	noLeak(t, "the logs", logs)
	for _, s := range fake.Record().Sessions {
		if strings.Contains(logs, s.ID) {
			t.Errorf("a session id appears in the logs")
		}
	}
}

// FallbackLabel selects the resume_refused series.
const FallbackLabel = `reason="resume_refused"`

// checkRoll checks what a roll did at the fake between two records:
// identifies IDENTIFYs, no session start beyond them, never two live
// sessions of a shard. It returns the roll's RESUMEs.
func checkRoll(t *testing.T, what string, before, after discordtest.Record, identifies int) []discordtest.ResumeRecord {
	t.Helper()
	if n := len(after.Identifies) - len(before.Identifies); n != identifies {
		t.Errorf("%s: %d IDENTIFYs, want %d", what, n, identifies)
	}
	if n := after.Starts.Used - before.Starts.Used; n != identifies {
		t.Errorf("%s: %d session starts, want %d", what, n, identifies)
	}
	if after.MaxLive > 1 {
		t.Errorf("%s: a shard had %d live sessions at once", what, after.MaxLive)
	}
	rs := after.Resumes[len(before.Resumes):]
	replayed := 0
	shards := map[int]bool{}
	for _, rr := range rs {
		replayed += rr.Replayed
		shards[rr.Shard] = true
	}
	if len(shards) != 8 {
		t.Errorf("%s: RESUMEs of shards %v, want all 8", what, shards)
	}
	t.Logf("%s: %d RESUMEs, %d dispatches replayed", what, len(rs), replayed)
	return rs
}

// stateOf asks /state on every shard (a guild of each) and returns the
// answers without the process id.
func stateOf(t *testing.T, fake *discordtest.Server) map[int]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	pid := regexp.MustCompile(` pid=\d+`)
	out := map[int]string{}
	for shard := range 8 {
		rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: fake.GuildIDsOf(shard, 8)[0], Command: "state"})
		if err != nil {
			t.Errorf("/state on shard %d: %v", shard, err)
			continue
		}
		out[shard] = pid.ReplaceAllString(rep.Content, "")
	}
	return out
}

// metricSum adds up the series of name on the supervisor's /metrics whose
// labels contain match ("" for all).
func metricSum(t *testing.T, p *proc, name, match string) float64 {
	t.Helper()
	fams := p.metrics(t)
	var sum float64
	for _, m := range fams[name].GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
		}
		if match == "" || strings.Contains(strings.Join(labels, ","), match) {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// eachEventOnce stops the fake's event stream and waits until the
// handlers (SHARDVISOR_TEST_EVENTS_FILE's lines, written by every process
// of the bot) have seen every sequence number of each shard's live
// session, from 1 to the last the fake dispatched, exactly once: nothing
// lost and nothing twice, across every handoff the session went through.
// Every shard must have had only that one session.
func eachEventOnce(t *testing.T, what string, fake *discordtest.Server, file string) {
	t.Helper()
	fake.SetEventRate(0)
	want := map[int]int64{}
	for _, s := range fake.Record().Sessions {
		if s.Alive() {
			want[s.Shard], _ = fake.SessionSeq(s.ID)
		}
	}
	var missing, twice []string
	harness.Poll(t, what+": every event seen once", 20*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return false, err
		}
		seen := map[int]map[int64]int{}
		for line := range strings.Lines(string(b)) {
			var shard int
			var seq int64
			var typ string
			if _, err := fmt.Sscanf(line, "%d %d %s", &shard, &seq, &typ); err != nil {
				continue // a line still being written
			}
			if seen[shard] == nil {
				seen[shard] = map[int64]int{}
			}
			seen[shard][seq]++
		}
		missing, twice = nil, nil
		for shard, last := range want {
			for seq := int64(1); seq <= last; seq++ {
				switch n := seen[shard][seq]; {
				case n == 0:
					missing = append(missing, fmt.Sprintf("shard %d seq %d", shard, seq))
				case n > 1:
					twice = append(twice, fmt.Sprintf("shard %d seq %d (%d times)", shard, seq, n))
				}
			}
		}
		if len(twice) > 0 {
			return true, nil // seen twice cannot heal
		}
		return len(missing) == 0, fmt.Errorf("%d events not seen, e.g. %v", len(missing), missing[:min(len(missing), 5)])
	})
	if len(twice) > 0 {
		t.Errorf("%s: %d events handled twice, e.g. %v", what, len(twice), twice[:min(len(twice), 5)])
	}
	total := int64(0)
	for _, n := range want {
		total += n
	}
	t.Logf("%s: %d events of %d shards, each handled once", what, total, len(want))
}
