package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// guildsHandled reads the events file's GUILD_CREATE lines: for each guild
// id, the shard counts whose handlers saw it.
func guildsHandled(t testing.TB, file string) map[string]map[int]int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]map[int]int{}
	for line := range strings.Lines(string(b)) {
		var id string
		var count, shard int
		if _, err := fmt.Sscanf(line, "guild %s %d %d", &id, &count, &shard); err != nil {
			continue
		}
		if out[id] == nil {
			out[id] = map[int]int{}
		}
		out[id][count]++
	}
	return out
}

// TestReshard: 8 shards in 4 clusters, a guild joining every 25 ms, then
// ctl reshard 16. Every guild has a live session at every moment (the
// fake's record), the handlers see every joined guild's GUILD_CREATE at
// least once, the reshard spends exactly 16 session starts, /readyz is
// 200 throughout, and the plan is remembered in the session dir: the next
// start runs 16 shards with -shards 8.
func TestReshard(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 32, Shards: 8, EventRate: 20})
	dir := t.TempDir()
	events, sock, sessions := filepath.Join(dir, "events"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "sessions")
	env := []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_TEST_EVENTS_FILE=" + events}
	args := append([]string{"run", "-shards", "8", "-shards-per-cluster", "2", "-control-socket", sock, "-session-dir", sessions}, fastFlags(fake, freeAddr(t))...)
	p := shardvisor(t, env, args...)
	p.until(t, "ready", ready)
	before := len(fake.Record().Identifies)

	// Guilds join all along; /readyz is asked all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var joined []string
	notReady := 0
	// every runs f every d until stop: load, not a wait for an event.
	every := func(d time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(d):
				}
				f()
			}
		}()
	}
	every(25*time.Millisecond, func() {
		if ids, err := fake.AddGuilds(1); err == nil {
			mu.Lock()
			joined = append(joined, ids...)
			mu.Unlock()
		}
	})
	every(20*time.Millisecond, func() {
		if code, _, err := p.get("/readyz"); err == nil && code != 200 {
			mu.Lock()
			notReady++
			mu.Unlock()
		}
	})

	from := time.Now()
	out, code := command(t, []string{}, "ctl", "-control-socket", sock, "reshard", "16")
	if code != 0 || !strings.Contains(out, "reshard 8 → 16 shards in 8 clusters begun") {
		t.Fatalf("ctl reshard 16: exit %d: %s", code, out)
	}
	during := p.until(t, "the reshard under way or done", func(s supervisor.Snapshot) bool { return s.Reshard != nil || s.ShardCount == 16 })
	if during.Reshard != nil && (!during.Ready || during.ShardCount != 8) {
		t.Errorf("during the reshard the live fleet is %d shards, ready %v; want the old 8, ready", during.ShardCount, during.Ready)
	}
	p.until(t, "16 shards live and ready", func(s supervisor.Snapshot) bool {
		return s.ShardCount == 16 && s.Reshard == nil && s.Ready && len(s.Clusters) == 8
	})
	// The old fleet's sessions closed: only 16 live sessions.
	harness.Poll(t, "the old fleet's sessions closed", 20*time.Millisecond, func() (bool, error) {
		live := 0
		for _, s := range fake.Record().Sessions {
			if s.Alive() {
				live++
			}
		}
		return live == 16, nil
	})
	took := time.Since(from)
	// Joins go on until the new fleet has handled one.
	harness.Poll(t, "a join handled by the new fleet", 20*time.Millisecond, func() (bool, error) {
		mu.Lock()
		ids := slices.Clone(joined)
		mu.Unlock()
		handled := guildsHandled(t, events)
		return slices.ContainsFunc(ids, func(id string) bool { return handled[id][16] > 0 }), nil
	})
	close(stop)
	wg.Wait()
	to := time.Now()

	r := fake.Record()
	if spent := len(r.Identifies) - before; spent != 16 {
		t.Errorf("the reshard spent %d session starts, want 16", spent)
	}
	if gaps := fake.Uncovered(from, to); len(gaps) > 0 {
		t.Errorf("guilds without a live session during the reshard: %v", gaps)
	}
	mu.Lock()
	if notReady > 0 {
		t.Errorf("/readyz answered other than 200 %d times during the reshard", notReady)
	}
	ids := joined
	mu.Unlock()
	if len(ids) < 5 {
		t.Fatalf("only %d guilds joined during the reshard", len(ids))
	}
	// Each guild that joined was handled at least once: by the old fleet
	// before the switch, by the new one after it, by both around it.
	var handled map[string]map[int]int
	var missing []string
	harness.Poll(t, "every joined guild handled", 20*time.Millisecond, func() (bool, error) {
		handled, missing = guildsHandled(t, events), nil
		for _, id := range ids {
			if len(handled[id]) == 0 {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0, nil
	})
	both, old, nw := 0, 0, 0
	for _, id := range ids {
		switch h := handled[id]; {
		case h[8] > 0 && h[16] > 0:
			both++
		case h[8] > 0:
			old++
		default:
			nw++
		}
	}
	t.Logf("reshard 8 → 16 in %v; %d guilds joined: %d handled by the old fleet, %d by the new, %d by both around the switch",
		took.Round(time.Millisecond), len(ids), old, nw, both)
	if old == 0 || nw == 0 {
		t.Errorf("joins handled by the old fleet %d, by the new %d: want some of each", old, nw)
	}
	if v := metricSum(t, p, "shardvisor_reshards_total", `outcome="done"`); v != 1 {
		t.Errorf("shardvisor_reshards_total{outcome=\"done\"} = %v, want 1", v)
	}

	// The next start remembers the plan: -shards 8 runs 16.
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	noLeak(t, "the logs", p.out.String())
	if _, err := os.Stat(filepath.Join(sessions, "plan.json")); err != nil {
		t.Fatalf("no plan remembered: %v", err)
	}
	p2 := shardvisor(t, env, args...)
	s := p2.until(t, "ready again", ready)
	if s.ShardCount != 16 {
		t.Errorf("the next start runs %d shards, want the remembered 16", s.ShardCount)
	}
	if !strings.Contains(p2.out.String(), "starting with the shard count a reshard moved to") {
		t.Error("the next start does not say it uses the remembered plan")
	}
	p2.signal(t, syscall.SIGTERM)
	p2.wait(t)
}

// TestReshardRefused: too few session starts left for the new fleet; the
// reshard is refused with the figures, and the running fleet is untouched.
func TestReshardRefused(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 8, Shards: 4, SessionStartLimit: 24})
	sock := filepath.Join(t.TempDir(), "control.sock")
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "4", "-shards-per-cluster", "2", "-control-socket", sock}, fastFlags(fake, freeAddr(t))...)...)
	s0 := p.until(t, "ready", ready)
	before := len(fake.Record().Identifies)
	// 24 - 4 = 20 left; 20 shards need 20 and a margin of 4 (the reserve
	// of 2, and 2 for retries).
	out, code := command(t, nil, "ctl", "-control-socket", sock, "reshard", "20")
	if code == 0 || !strings.Contains(out, "too few session starts") {
		t.Fatalf("ctl reshard 20 with 20 session starts left: exit %d: %s", code, out)
	}
	for _, bad := range []struct{ arg, want string }{
		{"4", "the bot runs 4 shards already"},
		{"-1", "a shard count between 1 and"},
		{"many", "a shard count between 1 and"},
	} {
		out, code := command(t, nil, "ctl", "-control-socket", sock, "reshard", bad.arg)
		if code == 0 || !strings.Contains(out, bad.want) {
			t.Errorf("ctl reshard %s: exit %d: %s; want %q", bad.arg, code, out, bad.want)
		}
	}
	s1 := p.until(t, "still ready", ready)
	if got := len(fake.Record().Identifies) - before; got != 0 {
		t.Errorf("a refused reshard spent %d session starts", got)
	}
	if s1.ShardCount != 4 || s1.Reshard != nil {
		t.Errorf("after the refusal: %d shards, reshard %v", s1.ShardCount, s1.Reshard)
	}
	for i := range s0.Clusters {
		if s0.Clusters[i].PID != s1.Clusters[i].PID {
			t.Errorf("cluster %d's process changed (%d → %d)", i, s0.Clusters[i].PID, s1.Clusters[i].PID)
		}
	}
	if v := metricSum(t, p, "shardvisor_reshards_total", `outcome="refused"`); v < 2 {
		t.Errorf("shardvisor_reshards_total{outcome=\"refused\"} = %v, want at least 2", v)
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t)
}

// TestReshard4011: guilds join until each of 4 shards holds more than the
// fake allows, and it closes them with 4011. With -auto-reshard the
// supervisor reshards to Discord's recommendation and goes on; without, it
// exits 78 as before.
func TestReshard4011(t *testing.T) {
	for _, auto := range []bool{true, false} {
		t.Run(fmt.Sprintf("auto-reshard=%v", auto), func(t *testing.T) {
			fake := newFake(t, discordtest.Options{Guilds: 16, Shards: 4, MaxGuildsPerShard: 5})
			args := append([]string{"run", "-shards", "4", "-shards-per-cluster", "2"}, fastFlags(fake, freeAddr(t))...)
			if auto {
				args = append(args, "-auto-reshard")
			}
			p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken}, args...)
			p.until(t, "ready", ready)
			if err := fake.SetRecommendedShards(8); err != nil {
				t.Fatal(err)
			}
			if _, err := fake.AddGuilds(8); err != nil { // 24 guilds: 6 a shard of 4, 3 of 8
				t.Fatal(err)
			}
			if !auto {
				if code := p.wait(t); code != 78 {
					t.Fatalf("exit %d after 4011 without -auto-reshard, want 78", code)
				}
				if !strings.Contains(p.out.String(), "4011") {
					t.Error("the logs do not name the close code")
				}
				return
			}
			s := p.until(t, "8 shards ready", func(s supervisor.Snapshot) bool { return s.ShardCount == 8 && s.Ready && s.Reshard == nil })
			if len(s.Clusters) != 4 {
				t.Errorf("%d clusters after the reshard, want 4 of 2 shards", len(s.Clusters))
			}
			if !strings.Contains(p.out.String(), "resharding instead of stopping") {
				t.Error("the logs do not say a 4011 made it reshard")
			}
			p.signal(t, syscall.SIGTERM)
			if code := p.wait(t); code != 0 {
				t.Fatalf("exit %d after SIGTERM", code)
			}
		})
	}
}
