package supervisor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/sessiondir"
)

// discord answers GET /gateway/bot for a reshard with the recommended
// count and the session starts left.
func discord(shards, remaining int) func(*Config) {
	return func(c *Config) {
		c.Split = PlanConfig{ShardsPerCluster: 2}
		c.GatewayBot = func(context.Context) (GatewayBot, error) {
			return GatewayBot{Shards: shards, Budget: identify.Budget{Total: 1000, Remaining: remaining, ResetAt: time.Now().Add(time.Hour)}}, nil
		}
	}
}

// welcomes counts the fake children's welcomes by shard count and shadow.
func welcomes(tr *testRun, t *testing.T) map[string]int {
	out := map[string]int{}
	for _, e := range tr.events(t) {
		if len(e) == 5 && e[0] == "welcome" {
			out[e[3]+" "+e[4]]++
		}
	}
	return out
}

// TestReshardSwitches: 2 clusters of 2 shards resharded to 8 shards: the
// next fleet (4 clusters) starts in shadow, every process of it is told to
// go live once it is ready, it becomes the live fleet, and the old one
// stops; the live fleet stays ready throughout.
func TestReshardSwitches(t *testing.T) {
	var plans []Plan
	tr := start(t, 2, "well", discord(8, 1000), func(c *Config) {
		c.OnReshard = func(p Plan, _ string) { plans = append(plans, p) }
	})
	tr.waitFor(t, "ready", ready)
	st, err := tr.s.Reshard(context.Background(), ReshardAuto, "test")
	if err != nil {
		t.Fatal(err)
	}
	if st.From != 4 || st.To != 8 || len(st.Clusters) != 4 || st.Phase != ReshardStarting {
		t.Errorf("reshard status %+v, want 4 → 8 in 4 clusters, starting", st)
	}
	tr.waitFor(t, "the switch", func(s Snapshot) bool {
		if s.Reshard != nil && (!s.Ready || s.ShardCount != 4) {
			t.Errorf("during the reshard: live fleet of %d shards, ready %v", s.ShardCount, s.Ready)
		}
		return s.ShardCount == 8 && s.Reshard == nil && s.Ready
	})
	if err := tr.s.RestartCluster(3); err != nil { // the new fleet is the one restarts reach
		t.Errorf("restart cluster 3 of the new fleet: %v", err)
	}
	tr.s.Stop()
	if err := tr.result(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	w := welcomes(tr, t)
	if w["shadow=false count=4"] != 2 || w["shadow=true count=8"] != 4 || w["shadow=false count=8"] != 1 {
		t.Errorf("welcomes %v: want 2 live of 4 shards, 4 in shadow of 8, then 1 live of 8 (the restart)", w)
	}
	lives, terms := 0, 0
	for _, e := range tr.events(t) {
		switch e[0] {
		case "live":
			lives++
		case "term":
			terms++
		}
	}
	if lives != 4 {
		t.Errorf("%d processes told to go live, want 4", lives)
	}
	if terms != 2+4+1 { // the old fleet at the switch, then the new one (and the restarted one) at the stop
		t.Errorf("%d processes stopped, want 7", terms)
	}
	if len(plans) != 1 || plans[0].ShardCount != 8 {
		t.Errorf("OnReshard told %v, want the plan of 8 shards", plans)
	}
}

// TestReshardRefused: what refuses a reshard, each with a message saying
// why, and nothing started.
func TestReshardRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shards int
		mod    func(*Config)
		want   string
	}{
		{"too few session starts", 8, discord(8, 12), "too few session starts: the new fleet spends 8 and a margin of 51"},
		{"the running count", 4, discord(8, 1000), "the bot runs 4 shards already"},
		{"auto without more", ReshardAuto, discord(4, 1000), "the bot runs 4 shards already"},
		{"no way to ask", 8, func(c *Config) {}, "no way to ask Discord"},
		{"Discord does not answer", 8, func(c *Config) {
			c.GatewayBot = func(context.Context) (GatewayBot, error) { return GatewayBot{}, errors.New("connection refused") }
		}, "ask Discord for the session starts left: connection refused"},
		{"a plan this machine cannot run", 8, func(c *Config) {
			discord(8, 1000)(c)
			c.CheckPlan = func(p Plan) error {
				if len(p.Clusters) < 6 { // the old fleet's 2 and the next one's 4
					return nil
				}
				return errors.New("6 cluster processes; this machine's process limit is 5")
			}
		}, "process limit"},
		{"a partial plan", 8, func(c *Config) {
			discord(8, 1000)(c)
			c.Plan.Clusters = c.Plan.Clusters[:1]
		}, "this supervisor runs 1 of the plan's 2 clusters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := start(t, 2, "well", tc.mod)
			tr.waitFor(t, "ready", ready)
			_, err := tr.s.Reshard(context.Background(), tc.shards, "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reshard: %v, want %q", err, tc.want)
			}
			if s := tr.s.Store().Snapshot(); s.Reshard != nil || s.ShardCount != 4 {
				t.Errorf("after the refusal: %d shards, reshard %+v", s.ShardCount, s.Reshard)
			}
			if !strings.Contains(tr.logs.String(), "reshard refused") {
				t.Error("the refusal is not logged")
			}
			tr.s.Stop()
			tr.result(t)
			if w := welcomes(tr, t); len(w) != 1 {
				t.Errorf("welcomes %v: a refused reshard started processes", w)
			}
		})
	}
}

// TestReshardAbandoned: a next fleet whose processes crash in shadow
// until the restart policy gives up, or whose binary does not know shadow
// (it would handle events beside the live fleet), is stopped; the live
// fleet goes on, and a later reshard may be asked.
func TestReshardAbandoned(t *testing.T) {
	for _, b := range []string{"crash-in-shadow", "no-shadow"} {
		t.Run(b, func(t *testing.T) { testReshardAbandoned(t, b) })
	}
}

func testReshardAbandoned(t *testing.T, behaviour string) {
	tr := start(t, 2, behaviour, discord(8, 1000), func(c *Config) {
		c.Policy.MaxRestarts, c.Policy.Window = 2, time.Minute
	})
	tr.waitFor(t, "ready", ready)
	if _, err := tr.s.Reshard(context.Background(), 8, "test"); err != nil {
		t.Fatal(err)
	}
	tr.waitFor(t, "the reshard abandoned", func(s Snapshot) bool {
		for _, e := range s.Events {
			if e.Kind == EventReshard && strings.Contains(e.Message, "abandoned") {
				return s.Reshard == nil
			}
		}
		return false
	})
	s := tr.waitFor(t, "the live fleet ready", ready)
	if s.ShardCount != 4 || len(s.Clusters) != 2 {
		t.Errorf("after the abandoned reshard: %d shards in %d clusters", s.ShardCount, len(s.Clusters))
	}
	if _, err := tr.s.Reshard(context.Background(), 8, "again"); err != nil && strings.Contains(err.Error(), "under way") {
		t.Errorf("a reshard after an abandoned one: %v", err)
	}
	tr.s.Stop()
	if err := tr.result(t); err != nil {
		t.Errorf("Run: %v (a next fleet's failure must not stop the supervisor)", err)
	}
}

// TestReshard4011: a live cluster's 4011 with AutoReshard reshards to
// Discord's recommendation instead of stopping everything; without it,
// the supervisor stops with the fatal error as before.
func TestReshard4011(t *testing.T) {
	for _, auto := range []bool{true, false} {
		name := "without AutoReshard"
		if auto {
			name = "with AutoReshard"
		}
		t.Run(name, func(t *testing.T) {
			tr := start(t, 2, "well,0=fatal-4011-once", discord(8, 1000), func(c *Config) { c.AutoReshard = auto })
			if !auto {
				var fe *FatalError
				if err := tr.result(t); !errors.As(err, &fe) || !strings.Contains(fe.Message, "4011") {
					t.Fatalf("Run: %v, want a fatal error naming 4011", err)
				}
				return
			}
			s := tr.waitFor(t, "8 shards ready", func(s Snapshot) bool { return s.ShardCount == 8 && s.Ready && s.Reshard == nil })
			if len(s.Clusters) != 4 {
				t.Errorf("%d clusters, want 4", len(s.Clusters))
			}
			tr.s.Stop()
			if err := tr.result(t); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// TestReshardStopKeepsTheLiveFleet: the supervisor stopped with
// -session-dir while a reshard's next fleet is still in shadow keeps the
// live fleet's sessions, and nothing of the next fleet's (its shard count
// is not the plan's).
func TestReshardStopKeepsTheLiveFleet(t *testing.T) {
	tok, _ := secret.NewToken("test-token")
	d, err := sessiondir.Open(t.TempDir(), sessiondir.Binding{UserID: "1", ShardCount: 4, Token: tok}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tr := start(t, 2, "handoff-stuck-in-shadow", discord(8, 1000), func(c *Config) { c.Sessions = d })
	tr.waitFor(t, "ready", ready)
	if _, err := tr.s.Reshard(context.Background(), 8, "test"); err != nil {
		t.Fatal(err)
	}
	tr.waitFor(t, "the next fleet running in shadow", func(s Snapshot) bool {
		if s.Reshard == nil {
			return false
		}
		for _, c := range s.Reshard.Clusters {
			if c.PID == 0 || c.LastReport.IsZero() { // reporting: it said hello, and takes handoffs
				return false
			}
		}
		return true
	})
	tr.s.Stop()
	if err := tr.result(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for id := range 8 {
		h, err := d.Take(id, time.Now())
		switch {
		case id < 4 && (err != nil || h == nil):
			t.Errorf("shard %d of the live fleet: no record (%v)", id, err)
		case id < 4 && h.Seq != 5:
			t.Errorf("shard %d's record has sequence %d: the next fleet's session, not the live one's", id, h.Seq)
		case id >= 4 && h != nil:
			t.Errorf("shard %d of the next fleet has a record", id)
		}
	}
}
