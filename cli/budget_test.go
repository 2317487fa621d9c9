package cli

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// TestSessionStartLimitHeldAcrossTheReset is issue 17's case: 12 session
// starts per window, 8 shards in 4 clusters started, then 3 clusters
// killed one after another, wanting 6 starts with 4 left. The starts that
// are not there are held until Discord says the window was reset: the
// token is never reset, and every shard is ready after the reset.
func TestSessionStartLimitHeldAcrossTheReset(t *testing.T) {
	const window = 15 * time.Second
	fake := newFake(t, discordtest.Options{Shards: 8, SessionStartLimit: 12, SessionStartReset: window})
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "8", "-shards-per-cluster", "2", "-session-start-reserve", "0"}, fastFlags(fake, freeAddr(t))...)...)
	snap := p.until(t, "every shard ready", ready)
	for _, id := range []int{1, 2, 3} {
		if err := syscall.Kill(snap.Clusters[id].PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if id == 3 {
			break // its starts are not there until the reset
		}
		snap = p.until(t, "the killed cluster ready again", func(s supervisor.Snapshot) bool {
			return s.Ready && s.Clusters[id].Generation == 2
		})
	}
	p.until(t, "every shard ready after the reset", func(s supervisor.Snapshot) bool {
		return s.Ready && s.Clusters[3].Generation >= 2
	})
	r := fake.Record()
	if r.TokenRevoked {
		t.Fatalf("the token was reset: %d IDENTIFYs accepted", r.Identified(-1, discordtest.OutcomeReady))
	}
	if n := r.Identified(-1, discordtest.OutcomeReady); n != 14 {
		t.Errorf("%d sessions started, want 8 + 6", n)
	}
	if out := p.out.String(); !strings.Contains(out, "session start limit reached; holding every IDENTIFY") ||
		!strings.Contains(out, "session starts available again") {
		t.Errorf("the hold and its end are not logged")
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}
