package supervisor

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// patience bounds every wait on an event: generous, for a busy 2-core
// machine running the race detector.
const patience = 60 * time.Second

type testRun struct {
	s    *Supervisor
	done chan error
	dir  string
	logs *logBuffer // what the supervisor logged
}

// start runs a supervisor of n fake clusters scripted by behaviours (see
// fakeChild), stopping it at the end of the test if it still runs.
func start(t *testing.T, n int, behaviours string, mod ...func(*Config)) *testRun {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("SV_TEST_DIR", dir)
	t.Setenv("SV_TEST_CHILD", behaviours)
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newTestSupervisor(n, nil, logger, mod...)
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRun{s: s, done: make(chan error, 1), dir: dir, logs: logs}
	go func() { tr.done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Hurry()
		select {
		case <-tr.done:
		case <-time.After(patience):
			t.Error("supervisor did not return after Hurry")
		}
	})
	return tr
}

// waitFor waits until cond holds for the store's snapshot.
func (tr *testRun) waitFor(t *testing.T, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.After(patience)
	for {
		changed := tr.s.Store().Changed()
		snap := tr.s.Store().Snapshot()
		if cond(snap) {
			return snap
		}
		select {
		case <-changed:
		case err := <-tr.done:
			t.Fatalf("waiting for %s: supervisor returned %v", what, err)
		case <-deadline:
			t.Fatalf("waiting for %s: not within %v; last status %+v", what, patience, snap)
		}
	}
}

// result waits for Run to return.
func (tr *testRun) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-tr.done:
		tr.done <- err // for the cleanup
		return err
	case <-time.After(patience):
		t.Fatal("supervisor did not return")
		return nil
	}
}

// events reads the fake children's event log.
func (tr *testRun) events(t *testing.T) [][]string {
	f, err := os.Open(filepath.Join(tr.dir, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, strings.Fields(sc.Text()))
	}
	return out
}

func ready(s Snapshot) bool { return s.Ready }

// logBuffer keeps what is written to it; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, state, _, ok := parseStat(b)
	return ok && state != 'Z'
}

func TestStartsEveryClusterAndStopsCleanly(t *testing.T) {
	tr := start(t, 3, "well")
	snap := tr.waitFor(t, "all ready", ready)
	var pids []int
	for _, c := range snap.Clusters {
		if c.Restarts != 0 || c.Generation != 1 {
			t.Errorf("cluster %d restarted (%d) before ready: did it inherit what it should not?", c.ID, c.Restarts)
		}
		pids = append(pids, c.PID)
	}
	if got := snap.Summary(); got != "6/6 shards ready, 3/3 clusters" {
		t.Errorf("summary %q", got)
	}
	began := time.Now()
	tr.s.Stop()
	if err := tr.result(t); err != nil {
		t.Fatalf("Run after a clean stop: %v", err)
	}
	t.Logf("stop of 3 clusters took %v", time.Since(began))
	terms := 0
	for _, e := range tr.events(t) {
		if e[0] == "term" {
			terms++
		}
	}
	if terms != 3 {
		t.Errorf("%d children saw SIGTERM, want 3", terms)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still alive after Run returned", pid)
		}
	}
}

func TestRestartAfterKill9(t *testing.T) {
	tr := start(t, 2, "well")
	snap := tr.waitFor(t, "all ready", ready)
	old := snap.Clusters[0].PID
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	snap = tr.waitFor(t, "cluster 0 replaced and ready", func(s Snapshot) bool {
		return s.Clusters[0].Generation == 2 && s.Ready
	})
	c := snap.Clusters[0]
	if c.PID == old || c.LastExit == nil || c.LastExit.Signal != "killed" || c.RestartsBy[ReasonSignal] != 1 {
		t.Fatalf("after kill -9: %+v last exit %+v", c, c.LastExit)
	}
	if snap.Clusters[1].Generation != 1 {
		t.Errorf("cluster 1 was restarted too")
	}
	for _, e := range tr.events(t) {
		if e[0] == "start" && e[2] == strconv.Itoa(c.PID) {
			at, _ := strconv.ParseInt(e[3], 10, 64)
			t.Logf("kill -9 to replacement start: %v (restart delay 20ms ±10%%)", time.Unix(0, at).Sub(killed))
		}
	}
}

func TestFatalStatusStopsEverything(t *testing.T) {
	tr := start(t, 3, "1=fatal")
	err := tr.result(t)
	var fe *FatalError
	if !errors.As(err, &fe) || fe.ClusterID != 1 || !strings.Contains(fe.Message, "4014") {
		t.Fatalf("Run = %v, want a FatalError for cluster 1 naming close 4014", err)
	}
	snap := tr.s.Store().Snapshot()
	if c := snap.Clusters[1]; c.Generation != 1 || c.State != ClusterFatal {
		t.Errorf("fatal cluster: generation %d state %s, want 1 and fatal", c.Generation, c.State)
	}
	for _, c := range snap.Clusters {
		if c.PID != 0 {
			t.Errorf("cluster %d still has pid %d", c.ID, c.PID)
		}
	}
}

func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	tr := start(t, 2, "0=ignore-term", func(c *Config) { c.ShutdownTimeout = 500 * time.Millisecond })
	snap := tr.waitFor(t, "all ready", ready)
	began := time.Now()
	tr.s.Stop()
	err := tr.result(t)
	took := time.Since(began)
	if !errors.Is(err, ErrUncleanStop) {
		t.Fatalf("Run = %v, want ErrUncleanStop", err)
	}
	if took < 500*time.Millisecond {
		t.Errorf("stop took %v, less than the shutdown timeout", took)
	}
	if alive(snap.Clusters[0].PID) {
		t.Errorf("the process that ignored SIGTERM is alive")
	}
}

func TestHurryKillsAtOnce(t *testing.T) {
	tr := start(t, 1, "ignore-term", func(c *Config) { c.ShutdownTimeout = time.Hour })
	tr.waitFor(t, "all ready", ready)
	tr.s.Stop()
	tr.waitFor(t, "stopping", func(s Snapshot) bool { return s.Clusters[0].State == ClusterStopping })
	tr.s.Hurry()
	if err := tr.result(t); !errors.Is(err, ErrUncleanStop) {
		t.Fatalf("Run = %v, want ErrUncleanStop", err)
	}
}

func TestWatchdogKillsSilentChild(t *testing.T) {
	tr := start(t, 2, "0=silent", func(c *Config) { c.ChildWatchdog = 300 * time.Millisecond })
	snap := tr.waitFor(t, "a watchdog restart", func(s Snapshot) bool { return s.Clusters[0].RestartsBy[ReasonWatchdog] >= 1 })
	if snap.Clusters[1].Restarts != 0 {
		t.Errorf("the talking cluster was restarted: %+v", snap.Clusters[1])
	}
}

func TestProtocolViolationsCutOff(t *testing.T) {
	tr := start(t, 4, "0=garbage,1=flood,2=foreign-shard,3=well")
	snap := tr.waitFor(t, "three clusters cut off", func(s Snapshot) bool {
		for _, c := range s.Clusters[:3] {
			if c.RestartsBy[ReasonProtocol] < 1 {
				return false
			}
		}
		return s.Clusters[3].Ready()
	})
	if snap.Clusters[3].Restarts != 0 {
		t.Errorf("the well-behaved cluster was restarted")
	}
}

func TestIntensityLimit(t *testing.T) {
	tr := start(t, 2, "0=crash", func(c *Config) {
		c.Policy.MaxRestarts, c.Policy.Window = 3, time.Minute
	})
	var ie *IntensityError
	if err := tr.result(t); !errors.As(err, &ie) || ie.ClusterID != 0 {
		t.Fatalf("Run = %v, want an IntensityError for cluster 0", err)
	}
	if c := tr.s.Store().Snapshot().Clusters[0]; c.Generation != 4 {
		t.Errorf("crashing cluster started %d times, want 4 (3 restarts allowed)", c.Generation)
	}
}

func TestRestartsAfterStartFailure(t *testing.T) {
	var mu sync.Mutex
	fail := true
	tr := start(t, 1, "well", func(c *Config) {
		l := c.Launcher.(*ExecLauncher)
		l.Executable = func() (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				fail = false
				return "/nonexistent/shardvisor", nil
			}
			return os.Executable()
		}
	})
	snap := tr.waitFor(t, "ready after a failed start", ready)
	if c := snap.Clusters[0]; c.Restarts != 1 || c.Generation != 1 {
		t.Errorf("after one failed start: restarts %d generation %d", c.Restarts, c.Generation)
	}
}

func TestRollingRestart(t *testing.T) {
	tr := start(t, 3, "well")
	before := tr.waitFor(t, "all ready", ready)
	tr.s.RollingRestart()
	tr.s.RollingRestart() // a second one while the first runs does nothing
	snap := tr.waitFor(t, "every cluster replaced and ready", func(s Snapshot) bool {
		for _, c := range s.Clusters {
			if c.Generation != 2 {
				return false
			}
		}
		return s.Ready
	})
	for i, c := range snap.Clusters {
		if c.RestartsBy[ReasonRolling] != 1 || c.PID == before.Clusters[i].PID {
			t.Errorf("cluster %d: %+v", c.ID, c)
		}
	}
	// One at a time: each old process got SIGTERM only after the previous
	// cluster's new process had started.
	order := map[string]int{}
	for i, e := range tr.events(t) {
		order[e[0]+" "+e[2]] = i
	}
	for i := 1; i < 3; i++ {
		newPrev := order["start "+strconv.Itoa(snap.Clusters[i-1].PID)]
		termThis := order["term "+strconv.Itoa(before.Clusters[i].PID)]
		if termThis < newPrev {
			t.Errorf("cluster %d was stopped before cluster %d's new process started", i, i-1)
		}
	}
}

func TestRollingRestartStopsOnBrokenBinary(t *testing.T) {
	var mu sync.Mutex
	behaviours := "well"
	tr := start(t, 3, "well", func(c *Config) {
		c.Launcher.(*ExecLauncher).Environ = func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append(os.Environ(), "SV_TEST_ROLE=child", "SV_TEST_CHILD="+behaviours)
		}
	})
	tr.waitFor(t, "all ready", ready)
	mu.Lock()
	behaviours = "1=crash" // the "new binary" crashes for cluster 1
	mu.Unlock()
	tr.s.RollingRestart()
	tr.waitFor(t, "cluster 1's new process crashed", func(s Snapshot) bool { return s.Clusters[1].RestartsBy[ReasonExit] >= 1 })
	tr.s.wg.Wait() // the rolling restart gives up
	snap := tr.s.Store().Snapshot()
	if snap.Clusters[0].Generation != 2 || snap.Clusters[2].Generation != 1 {
		t.Fatalf("generations %d/%d/%d: want 2 for the rolled cluster, 1 for the one after the broken one",
			snap.Clusters[0].Generation, snap.Clusters[1].Generation, snap.Clusters[2].Generation)
	}
}

func TestMetricsOverChannel(t *testing.T) {
	tr := start(t, 2, "1=slow-metrics")
	tr.waitFor(t, "all ready", ready)
	b, err := tr.s.live().runners[0].channel().Metrics(context.Background())
	if err != nil || string(b) != "metrics of 0" {
		t.Fatalf("metrics = %q, %v", b, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := tr.s.live().runners[1].channel().Metrics(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("metrics of a child that never answers: %v", err)
	}
}
