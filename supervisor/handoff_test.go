package supervisor

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// indexOf returns the position of the first event with these fields, or -1.
func indexOf(events [][]string, fields ...string) int {
	return slices.IndexFunc(events, func(e []string) bool {
		return len(e) >= len(fields) && slices.Equal(e[:len(fields)], fields)
	})
}

// A rolling restart of children that take handoffs: each replacement
// starts before its predecessor is asked to freeze, gets every shard's
// session and snapshot relayed, and the old process is stopped only after
// the new one is ready.
func TestRollingRestartHandsOver(t *testing.T) {
	tr := start(t, 2, "handoff")
	before := tr.waitFor(t, "all ready", ready)
	tr.s.RollingRestart()
	snap := tr.waitFor(t, "both replaced", func(s Snapshot) bool {
		for _, c := range s.Clusters {
			if c.Generation != 2 || c.RestartsBy[ReasonRolling] != 1 {
				return false
			}
		}
		return s.Ready
	})
	tr.s.wg.Wait() // the old processes are retired
	ev := tr.events(t)
	for i, c := range snap.Clusters {
		id, oldPID, newPID := strconv.Itoa(c.ID), strconv.Itoa(before.Clusters[i].PID), strconv.Itoa(c.PID)
		started, froze := indexOf(ev, "start", id, newPID), indexOf(ev, "freeze", id, oldPID)
		handed, term := indexOf(ev, "handed", id, newPID), indexOf(ev, "term", id, oldPID)
		if started < 0 || froze < 0 || handed < 0 || term < 0 || !(started < froze && froze < handed && handed < term) {
			t.Errorf("cluster %d: new start %d, old freeze %d, handed %d, old term %d; want them in that order", c.ID, started, froze, handed, term)
		}
		for _, shard := range c.Shards {
			if indexOf(ev, "got", id, newPID, strconv.Itoa(shard), "session-"+strconv.Itoa(shard)) < 0 {
				t.Errorf("cluster %d: shard %d's session not relayed to the new process", c.ID, shard)
			}
		}
	}
}

// A replacement that dies after it took the handoff and before it is
// ready: the old process is told to resume and goes on serving, and the
// roll stops there.
func TestRollingRestartAbortsTheHandoff(t *testing.T) {
	var mu sync.Mutex
	behaviours := "handoff"
	tr := start(t, 2, "handoff", func(c *Config) {
		c.Launcher.(*ExecLauncher).Environ = func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append(os.Environ(), "SV_TEST_ROLE=child", "SV_TEST_CHILD="+behaviours)
		}
	})
	before := tr.waitFor(t, "all ready", ready)
	mu.Lock()
	behaviours = "handoff-crash-after"
	mu.Unlock()
	tr.s.RollingRestart()
	tr.s.wg.Wait() // the rolling restart gives up
	snap := tr.waitFor(t, "ready", ready)
	for i, c := range snap.Clusters {
		if c.PID != before.Clusters[i].PID || c.Generation != 1 {
			t.Errorf("cluster %d: pid %d generation %d, was pid %d", c.ID, c.PID, c.Generation, before.Clusters[i].PID)
		}
	}
	old := strconv.Itoa(before.Clusters[0].PID)
	var ev [][]string
	for deadline := time.Now().Add(patience); indexOf(ev, "abort", "0", old) < 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("cluster 0's old process was not told to resume; events %v", ev)
		}
		ev = tr.events(t)
	}
	if indexOf(ev, "freeze", "0", old) < 0 || indexOf(ev, "term", "0", old) >= 0 {
		t.Errorf("cluster 0's old process: want frozen, aborted, not stopped; events %v", ev)
	}
	if indexOf(ev, "freeze", "1") >= 0 {
		t.Error("the roll went on to cluster 1")
	}
}

// A roll to a binary that takes no handoff (an older one): the old process
// is stopped first, as rolling restarts always did, and never frozen.
func TestRollingRestartToABinaryWithoutHandoff(t *testing.T) {
	var mu sync.Mutex
	behaviours := "handoff"
	tr := start(t, 1, "handoff", func(c *Config) {
		c.Launcher.(*ExecLauncher).Environ = func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append(os.Environ(), "SV_TEST_ROLE=child", "SV_TEST_CHILD="+behaviours)
		}
	})
	before := tr.waitFor(t, "ready", ready)
	mu.Lock()
	behaviours = "well"
	mu.Unlock()
	tr.s.RollingRestart()
	snap := tr.waitFor(t, "replaced", func(s Snapshot) bool { return s.Clusters[0].Generation == 2 && s.Ready })
	tr.s.wg.Wait()
	// The new process reads its channel in order: once it answered a
	// metrics request, it had read whatever came before.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if ch := tr.s.live().runners[0].channel(); ch == nil {
		t.Error("no process runs the cluster")
	} else if _, err := ch.Metrics(ctx); err != nil {
		t.Errorf("the new process does not answer: %v", err)
	}
	ev := tr.events(t)
	old, nw := strconv.Itoa(before.Clusters[0].PID), strconv.Itoa(snap.Clusters[0].PID)
	if indexOf(ev, "freeze", "0", old) >= 0 || indexOf(ev, "term", "0", old) < 0 || indexOf(ev, "start", "0", nw) < 0 {
		t.Errorf("want the old process stopped, not frozen, and the new one started; events %v", ev)
	}
	if indexOf(ev, "breach") >= 0 {
		t.Errorf("the new process was sent a handoff message; events %v", ev)
	}
	if c := snap.Clusters[0]; c.RestartsBy[ReasonRolling] != 1 {
		t.Errorf("restarts %v", c.RestartsBy)
	}
}
