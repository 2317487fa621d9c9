package cli

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// TestCrashResumes kills a cluster process of a supervisor run with
// -resume-after-crash while events flow: its replacement RESUMEs both of
// its shards from their last checkpoint (no IDENTIFY, no session start),
// Discord replays what the dead process missed, the /ping command answers
// on them again, and no session id shows in the logs. Without the flag the
// same kill identifies the shards (TestCrashIdentifiesWithoutTheFlag).
func TestCrashResumes(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 16, Shards: 4, EventRate: 40})
	addr := freeAddr(t)
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_SHARDS_PER_CLUSTER=2"},
		append([]string{"run", "-shards", "4", "-resume-after-crash"}, fastFlags(fake, addr)...)...)
	start := p.until(t, "every shard ready and checkpointed", func(s supervisor.Snapshot) bool {
		return s.Ready && len(s.Clusters) == 2 && s.Clusters[1].Resumable == 2
	})
	r0 := fake.Record()
	victim := start.Clusters[1]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	after := p.until(t, "the crashed cluster back and ready", func(s supervisor.Snapshot) bool {
		c := s.Clusters[1]
		return s.Ready && c.PID != victim.PID && c.Restarts == 1
	})
	if got := after.Clusters[1].RestartsBy[supervisor.ReasonSignal]; got != 1 {
		t.Errorf("restarts by signal: %d, want 1", got)
	}
	r1 := fake.Record()
	if n := len(r1.Identifies) - len(r0.Identifies); n != 0 {
		t.Errorf("%d IDENTIFYs after the crash, want 0", n)
	}
	if n := r1.Starts.Used - r0.Starts.Used; n != 0 {
		t.Errorf("%d session starts spent, want 0", n)
	}
	if r1.MaxLive > 1 {
		t.Errorf("a shard had %d live sessions at once", r1.MaxLive)
	}
	resumed := map[int]bool{}
	for _, rr := range r1.Resumes[len(r0.Resumes):] {
		if rr.Outcome != discordtest.OutcomeResumed {
			t.Errorf("shard %d's RESUME: %s", rr.Shard, rr.Outcome)
		}
		resumed[rr.Shard] = true
		t.Logf("shard %d resumed at seq %d, %d dispatches replayed", rr.Shard, rr.Seq, rr.Replayed)
	}
	for _, shard := range victim.Shards {
		if !resumed[shard] {
			t.Errorf("shard %d was not resumed (resumed: %v)", shard, resumed)
		}
	}
	if got := metricSum(t, p, "shardvisor_handoff_resumes_total", `cause="crash"`); got != 2 {
		t.Errorf("crash resumes counted: %v, want 2", got)
	}
	pingEach(t, fake, victim.Shards, 4)

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

// TestCrashIdentifiesWithoutTheFlag: without -resume-after-crash nothing
// is reported and a crashed cluster's shards identify, as they always did.
func TestCrashIdentifiesWithoutTheFlag(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 8, Shards: 2})
	addr := freeAddr(t)
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_SHARDS_PER_CLUSTER=2"},
		append([]string{"run", "-shards", "2"}, fastFlags(fake, addr)...)...)
	start := p.until(t, "ready", ready)
	r0 := fake.Record()
	if err := syscall.Kill(start.Clusters[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	after := p.until(t, "back and ready", func(s supervisor.Snapshot) bool {
		return s.Ready && s.Clusters[0].Restarts == 1
	})
	if after.Clusters[0].Resumable != 0 {
		t.Errorf("%d resumable sessions reported without the flag", after.Clusters[0].Resumable)
	}
	if n := len(fake.Record().Identifies) - len(r0.Identifies); n != 2 {
		t.Errorf("%d IDENTIFYs after the crash, want 2", n)
	}
}

// pingEach asks /ping on a guild of each shard (of count) and wants one
// answer.
func pingEach(t *testing.T, fake *discordtest.Server, shards []int, count int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for _, shard := range shards {
		rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: fake.GuildIDsOf(shard, count)[0], Command: "ping"})
		if err != nil || rep.Content != "Pong!" {
			t.Errorf("/ping on shard %d: %+v, %v", shard, rep, err)
		}
	}
}
