package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// fleetLauncher starts in-memory children (on net.Pipe, as fakeLauncher)
// that answer fleet requests: "echo" with {"cluster":id,"data":...},
// "slow" never. A test makes calls as one of them with call.
type fleetLauncher struct {
	notReady map[int]bool // these clusters say hello but never ready
	stalled  map[int]bool // these read nothing after the welcome
	// hold, if set for a cluster when its process starts, keeps that
	// process from being ready until it is closed.
	hold map[int]chan struct{}

	mu       sync.Mutex
	children map[int]*fleetChild // the current process of each cluster
	nextID   int
}

type fleetChild struct {
	*fakeProc
	cluster int
	conn    *wire.Conn
	answers chan *wire.FleetAnswer
	slow    chan *wire.FleetRequest // requests for "slow", unanswered
}

func (l *fleetLauncher) Launch(c Cluster, _ int) (Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	sup, child := net.Pipe()
	p := &fakeProc{pid: 1000 + l.nextID, started: time.Now(), conn: sup, child: child, exit: make(chan Exit, 1), gone: make(chan struct{})}
	fc := &fleetChild{fakeProc: p, cluster: c.ID, conn: wire.NewConn(child, time.Second),
		answers: make(chan *wire.FleetAnswer, 4*fleetSlots), slow: make(chan *wire.FleetRequest, 4*fleetSlots)}
	if l.children == nil {
		l.children = map[int]*fleetChild{}
	}
	l.children[c.ID] = fc
	go fc.serve(c, l.notReady[c.ID], l.hold[c.ID], l.stalled[c.ID])
	return p, nil
}

func (l *fleetLauncher) child(id int) *fleetChild {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.children[id]
}

func (fc *fleetChild) serve(c Cluster, notReady bool, hold chan struct{}, stalled bool) {
	if _, err := fc.conn.Read(); err != nil { // welcome
		return
	}
	fc.conn.Write(&wire.Hello{ClusterID: c.ID, PID: fc.pid, ShardIDs: c.Shards})
	go func() {
		if stalled {
			<-fc.gone
			return
		}
		for {
			m, err := fc.conn.Read()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *wire.FleetAnswer:
				fc.answers <- m
			case *wire.FleetRequest:
				switch m.Name {
				case "echo":
					data, _ := json.Marshal(map[string]any{"cluster": fc.cluster, "data": m.Data})
					fc.conn.Write(&wire.FleetReply{ID: m.ID, Data: data})
				case "slow":
					fc.slow <- m
				default:
					fc.conn.Write(&wire.FleetReply{ID: m.ID, Code: wire.FleetNoSuchName, Error: "no " + m.Name})
				}
			}
		}
	}()
	for {
		state := wire.ShardReady
		if notReady {
			state = wire.ShardIdentifying
		}
		if hold != nil {
			select {
			case <-hold:
			default:
				state = wire.ShardIdentifying
			}
		}
		st := &wire.Status{}
		for _, s := range c.Shards {
			st.Shards = append(st.Shards, wire.ShardStatus{ID: s, State: state})
		}
		if fc.conn.Write(st) != nil {
			return
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-fc.gone:
			return
		}
	}
}

// call makes a call as this child and returns its answers by cluster.
func (fc *fleetChild) call(t *testing.T, m *wire.FleetCall) map[int]*wire.FleetAnswer {
	t.Helper()
	if err := fc.conn.Write(m); err != nil {
		t.Fatalf("cluster %d: send call: %v", fc.cluster, err)
	}
	return fc.collect(t, m.ID)
}

// collect reads the answers of call id, until it has all of them.
func (fc *fleetChild) collect(t *testing.T, id uint64) map[int]*wire.FleetAnswer {
	t.Helper()
	out := map[int]*wire.FleetAnswer{}
	limit := time.After(10 * time.Minute) // of the fake clock: fail, not hang
	for {
		var a *wire.FleetAnswer
		select {
		case a = <-fc.answers:
		case <-limit:
			t.Fatalf("cluster %d: call %d: %d answers within 10 minutes (fake clock): %v", fc.cluster, id, len(out), out)
		}
		if a.ID != id {
			t.Fatalf("answer to call %d while waiting for %d", a.ID, id)
		}
		out[a.Cluster] = a
		if a.Cluster < 0 || len(out) == a.Of {
			return out
		}
	}
}

// waitStore waits (on the fake clock, at most ten minutes of it, so that
// a condition that never comes fails instead of hanging) for cond on the
// store's clusters.
func waitStore(t *testing.T, s *Supervisor, what string, cond func() bool) {
	t.Helper()
	limit := time.After(10 * time.Minute)
	for {
		changed := s.Store().Changed()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-limit:
			t.Fatalf("waiting for %s: not within 10 minutes (fake clock): %+v", what, s.Store().Snapshot())
		}
	}
}

// fleetReady reports whether cluster id's process is ready and takes
// fleet requests.
func fleetReady(s *Supervisor, id int) bool {
	c, _ := s.Store().Cluster(id)
	ch := s.live().runners[id].channel()
	return c.Ready() && ch != nil && ch.fleet.ready.Load()
}

// startFleet runs a supervisor of n clusters of 2 shards on l, and waits
// until those not in l.notReady are ready.
func startFleet(t *testing.T, l *fleetLauncher, n int) (*Supervisor, func()) {
	plan, _ := NewPlan(PlanConfig{Shards: 2 * n, ShardsPerCluster: 2})
	q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
	tok, _ := secret.NewToken("t")
	s, err := New(Config{
		Plan: plan, Launcher: l, Queue: q, Token: tok,
		Policy:          RestartPolicy{Delay: time.Hour, MaxDelay: time.Hour, Stable: time.Minute},
		ShutdownTimeout: time.Second, ChildWatchdog: time.Minute,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	for id := range n {
		if l.notReady[id] {
			continue
		}
		waitStore(t, s, fmt.Sprintf("cluster %d ready", id), func() bool { return fleetReady(s, id) })
	}
	return s, func() {
		s.Stop()
		<-done
	}
}

func TestFleetRoutesToOneEveryAndTheGuildsCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		_, stop := startFleet(t, l, 3)
		defer stop()
		c0 := l.child(0)

		all := c0.call(t, &wire.FleetCall{ID: 1, Name: "echo", To: wire.ToAll, Timeout: time.Second, Data: json.RawMessage(`"hi"`)})
		if len(all) != 3 {
			t.Fatalf("broadcast answers %v, want 3", all)
		}
		for id := range 3 {
			want := fmt.Sprintf(`{"cluster":%d,"data":"hi"}`, id)
			if a := all[id]; a == nil || a.Code != wire.FleetOK || string(a.Data) != want || a.Of != 3 {
				t.Errorf("cluster %d answered %+v, want data %s", id, a, want)
			}
		}

		one := c0.call(t, &wire.FleetCall{ID: 2, Name: "echo", To: wire.ToCluster, Cluster: 2, Timeout: time.Second})
		if a := one[2]; len(one) != 1 || a == nil || !strings.Contains(string(a.Data), `"cluster":2`) {
			t.Errorf("ask cluster 2: %v", one)
		}

		// Shards 0-1 are cluster 0's, 2-3 cluster 1's, 4-5 cluster 2's.
		for shard := range 6 {
			guild := uint64(shard)<<22 | 12345 // (guild >> 22) % 6 == shard
			got := c0.call(t, &wire.FleetCall{ID: uint64(10 + shard), Name: "echo", To: wire.ToGuild, Guild: guild, Timeout: time.Second})
			if a := got[shard/2]; len(got) != 1 || a == nil || a.Code != wire.FleetOK {
				t.Errorf("guild on shard %d: answers %v, want one from cluster %d", shard, got, shard/2)
			}
		}

		unknown := c0.call(t, &wire.FleetCall{ID: 20, Name: "nope", To: wire.ToCluster, Cluster: 1, Timeout: time.Second})
		if a := unknown[1]; a == nil || a.Code != wire.FleetNoSuchName {
			t.Errorf("unknown name: %v", unknown)
		}
		outside := c0.call(t, &wire.FleetCall{ID: 21, Name: "echo", To: wire.ToCluster, Cluster: 3, Timeout: time.Second})
		if a := outside[-1]; a == nil || a.Code != wire.FleetBadRequest || !strings.Contains(a.Error, "clusters 0-2") {
			t.Errorf("call to cluster 3 of 3: %v", outside)
		}
	})
}

// TestFleetUnavailableAtOnce: a cluster whose process is down (in its
// restart backoff) or not yet ready answers "unavailable" without the
// call waiting for its deadline, and the others still answer.
func TestFleetUnavailableAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{notReady: map[int]bool{2: true}}
		s, stop := startFleet(t, l, 4)
		defer stop()
		l.child(1).end(Exit{Code: 1}) // restarted only after an hour
		waitStore(t, s, "cluster 1 in backoff", func() bool { c, _ := s.Store().Cluster(1); return c.State == ClusterBackoff })
		waitStore(t, s, "cluster 2 started", func() bool { c, _ := s.Store().Cluster(2); return c.State == ClusterStarting })
		start := time.Now()
		all := l.child(0).call(t, &wire.FleetCall{ID: 1, Name: "echo", To: wire.ToAll, Timeout: 30 * time.Second})
		if took := time.Since(start); took >= 30*time.Second {
			t.Errorf("the broadcast took %v: it waited for the deadline", took)
		}
		want := map[int]string{0: "", 1: "not running (backoff)", 2: "starting, not ready yet", 3: ""}
		for id, why := range want {
			a := all[id]
			switch {
			case a == nil:
				t.Errorf("cluster %d: no answer", id)
			case why == "" && a.Code != wire.FleetOK:
				t.Errorf("cluster %d: %+v, want an answer", id, a)
			case why != "" && (a.Code != wire.FleetUnavailable || !strings.Contains(a.Error, why)):
				t.Errorf("cluster %d: %+v, want unavailable: %s", id, a, why)
			}
		}
	})
}

// TestFleetDeadlineAndExit: a cluster that does not answer gets
// "deadline" at the call's timeout; one whose process exits with requests
// pending answers "unavailable" as it goes, before the deadline.
func TestFleetDeadlineAndExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		_, stop := startFleet(t, l, 2)
		defer stop()
		c0, c1 := l.child(0), l.child(1)

		start := time.Now()
		got := c0.call(t, &wire.FleetCall{ID: 1, Name: "slow", To: wire.ToCluster, Cluster: 1, Timeout: 2 * time.Second})
		if a := got[1]; a == nil || a.Code != wire.FleetDeadline {
			t.Fatalf("slow cluster: %v, want deadline", got)
		}
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("the deadline answer came after %v, want the call's 2s", took)
		}
		<-c1.slow

		if err := c0.conn.Write(&wire.FleetCall{ID: 2, Name: "slow", To: wire.ToCluster, Cluster: 1, Timeout: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		<-c1.slow // the request reached it
		start = time.Now()
		c1.end(Exit{Code: 1})
		got = c0.collect(t, 2)
		if a := got[1]; a == nil || a.Code != wire.FleetUnavailable || !strings.Contains(a.Error, "exited") {
			t.Fatalf("cluster gone with the request: %v, want unavailable", got)
		}
		if took := time.Since(start); took >= 30*time.Second {
			t.Errorf("answered after %v: it waited for the deadline", took)
		}
	})
}

// TestFleetInFlightBound: requests beyond the bound of what one cluster
// has to answer are "busy" at once, the callers are not cut off, and the
// other clusters go on answering.
func TestFleetInFlightBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		s, stop := startFleet(t, l, 3)
		defer stop()
		c0, c1, c2 := l.child(0), l.child(1), l.child(2)
		// Clusters 0 and 1 each send 300 requests that cluster 2 never
		// answers: 600 > fleetSlots.
		const each = 300
		for i := range each {
			for _, c := range []*fleetChild{c0, c1} {
				if err := c.conn.Write(&wire.FleetCall{ID: uint64(1 + i), Name: "slow", To: wire.ToCluster, Cluster: 2, Timeout: time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
		}
		synctest.Wait()
		busy := len(c0.answers) + len(c1.answers)
		if busy != 2*each-fleetSlots {
			t.Errorf("%d calls answered busy at once, want %d", busy, 2*each-fleetSlots)
		}
		for _, c := range []*fleetChild{c0, c1} {
			for len(c.answers) > 0 {
				if a := <-c.answers; a.Code != wire.FleetBusy {
					t.Errorf("cluster %d got %+v, want busy", c.cluster, a)
				}
			}
		}
		if n := len(c2.slow); n != fleetSlots {
			t.Errorf("cluster 2 got %d requests, want %d", n, fleetSlots)
		}
		// Cluster 2 is saturated; cluster 1 answers cluster 0 as before.
		got := c0.call(t, &wire.FleetCall{ID: 1000, Name: "echo", To: wire.ToCluster, Cluster: 1, Timeout: time.Second})
		if a := got[1]; a == nil || a.Code != wire.FleetOK {
			t.Errorf("while cluster 2 is flooded: %v", got)
		}
		for id := range 3 {
			if c, _ := s.Store().Cluster(id); c.Restarts != 0 {
				t.Errorf("cluster %d restarted: %+v", id, c.LastExit)
			}
		}
	})
}

// TestFleetCallerBound: one caller waits for at most fleetSlots answers.
func TestFleetCallerBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		_, stop := startFleet(t, l, 2)
		defer stop()
		c0 := l.child(0)
		// Broadcasts of "slow": cluster 0 gets its own requests, cluster 1
		// its; each broadcast waits for 2 answers.
		for i := range fleetSlots/2 + 1 {
			if err := c0.conn.Write(&wire.FleetCall{ID: uint64(1 + i), Name: "slow", To: wire.ToAll, Timeout: time.Minute}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if len(c0.answers) != 1 {
			t.Fatalf("%d answers at once, want the last call refused", len(c0.answers))
		}
		if a := <-c0.answers; a.ID != fleetSlots/2+1 || a.Cluster != -1 || a.Code != wire.FleetBusy {
			t.Errorf("got %+v, want call %d refused as busy", a, fleetSlots/2+1)
		}
	})
}

// TestFleetReplyNeverAskedForIsAViolation: a cluster cannot flood the
// supervisor with replies (they bypass the flood limit): one to a request
// never sent cuts it off.
func TestFleetReplyNeverAskedForIsAViolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		s, stop := startFleet(t, l, 1)
		defer stop()
		l.child(0).conn.Write(&wire.FleetReply{ID: 1 << 40, Data: json.RawMessage(`1`)})
		waitStore(t, s, "cluster 0 cut off", func() bool { c, _ := s.Store().Cluster(0); return c.LastExit != nil })
		if c, _ := s.Store().Cluster(0); c.LastExit.Reason != ReasonProtocol {
			t.Errorf("exit reason %s, want protocol", c.LastExit.Reason)
		}
	})
}

// TestSupervisorFleetCall: the supervisor's own calls (its HTTP API's).
func TestSupervisorFleetCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		s, stop := startFleet(t, l, 2)
		defer stop()
		got, err := s.FleetCall(context.Background(), "echo", wire.ToAll, 0, 0, nil)
		if err != nil || len(got) != 2 || got[0].Cluster != 0 || got[1].Cluster != 1 {
			t.Fatalf("FleetCall = %v, %v", got, err)
		}
	})
}

// TestFleetDuringRollingRestart: while a cluster is replaced, calls to it
// are unavailable at once (its old process stopping, its new one not yet
// ready), never hung; once the new process is ready they reach it.
func TestFleetDuringRollingRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{}
		s, stop := startFleet(t, l, 2)
		defer stop()
		old := l.child(1)
		// Hold the replacement at "not ready" until the test has called it.
		hold := make(chan struct{})
		l.mu.Lock()
		l.hold = map[int]chan struct{}{1: hold}
		l.mu.Unlock()
		s.RollingRestart()
		waitStore(t, s, "cluster 1's new process", func() bool { c, _ := s.Store().Cluster(1); return c.Generation == 2 })
		if l.child(1) == old {
			t.Fatal("generation 2 with the old process")
		}
		got := l.child(0).call(t, &wire.FleetCall{ID: 1, Name: "echo", To: wire.ToCluster, Cluster: 1, Timeout: 30 * time.Second})
		if a := got[1]; a == nil || a.Code != wire.FleetUnavailable {
			t.Fatalf("cluster 1 while replaced: %v, want unavailable", got)
		}
		// Its replacement becomes ready: calls reach it.
		close(hold)
		waitStore(t, s, "cluster 1's new process ready", func() bool { return fleetReady(s, 1) })
		got = l.child(0).call(t, &wire.FleetCall{ID: 2, Name: "echo", To: wire.ToCluster, Cluster: 1, Timeout: 30 * time.Second})
		if a := got[1]; a == nil || a.Code != wire.FleetOK {
			t.Fatalf("cluster 1 once replaced and ready: %v", got)
		}
		if c, _ := s.Store().Cluster(1); c.Generation != 2 || c.RestartsBy[ReasonRolling] != 1 {
			t.Errorf("cluster 1 after the rolling restart: generation %d, restarts %v", c.Generation, c.RestartsBy)
		}
	})
}

// TestFleetStalledTargetIsNotCutOff: a cluster that stops reading its
// channel for a while (a long GC pause, a busy machine) while another
// floods it with short calls gets "busy" once its queue holds fleetSlots
// messages; the flood cannot fill the queue and get it cut off.
func TestFleetStalledTargetIsNotCutOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fleetLauncher{stalled: map[int]bool{1: true}}
		s, stop := startFleet(t, l, 2)
		defer stop()
		c0 := l.child(0)
		outcomes := map[wire.FleetCode]int{}
		for i := range 2000 {
			got := c0.call(t, &wire.FleetCall{ID: uint64(1 + i), Name: "echo", To: wire.ToCluster, Cluster: 1, Timeout: time.Millisecond})
			outcomes[got[1].Code]++
		}
		if outcomes[wire.FleetBusy] == 0 || outcomes[wire.FleetDeadline] == 0 {
			t.Errorf("outcomes %v, want deadlines, then busy once its queue is full", outcomes)
		}
		if c, _ := s.Store().Cluster(1); c.Restarts != 0 {
			t.Errorf("the stalled cluster was cut off: %+v", c.LastExit)
		}
	})
}
