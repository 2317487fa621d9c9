package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// fakeLauncher starts in-memory processes whose channel is a net.Pipe and
// whose child side is a goroutine: with testing/synctest, the supervisor's
// timers run on a fake clock and delays can be checked exactly.
type fakeLauncher struct {
	silent bool // the children say hello and then nothing
	mu     sync.Mutex
	starts []time.Time
	procs  []*fakeProc
	nextID int
}

type fakeProc struct {
	pid     int
	started time.Time
	conn    net.Conn
	child   net.Conn
	exit    chan Exit
	gone    chan struct{}
	once    sync.Once
}

func (l *fakeLauncher) Launch(c Cluster, _ int) (Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	sup, child := net.Pipe()
	p := &fakeProc{pid: 1000 + l.nextID, started: time.Now(), conn: sup, child: child, exit: make(chan Exit, 1), gone: make(chan struct{})}
	l.starts = append(l.starts, p.started)
	l.procs = append(l.procs, p)
	go p.serve(c, l.silent)
	return p, nil
}

// serve plays a child: hello, then (unless silent) "all ready" every 100 ms.
func (p *fakeProc) serve(c Cluster, silent bool) {
	conn := wire.NewConn(p.child, time.Second)
	if _, err := conn.Read(); err != nil { // welcome
		return
	}
	conn.Write(&wire.Hello{ClusterID: c.ID, PID: p.pid, ShardIDs: c.Shards})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if _, err := conn.Read(); err != nil {
				return
			}
		}
	}()
	if silent {
		<-drained
		return
	}
	for {
		st := &wire.Status{}
		for _, s := range c.Shards {
			st.Shards = append(st.Shards, wire.ShardStatus{ID: s, State: wire.ShardReady})
		}
		if conn.Write(st) != nil {
			return
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-p.gone:
			return
		}
	}
}

// end makes the process exit with e.
func (p *fakeProc) end(e Exit) {
	p.once.Do(func() {
		close(p.gone)
		p.child.Close()
		e.Uptime = time.Since(p.started)
		e.Reason = ReasonExit
		if e.Signal != 0 {
			e.Reason = ReasonSignal
		}
		p.exit <- e
	})
}

func (p *fakeProc) PID() int          { return p.pid }
func (p *fakeProc) Channel() net.Conn { return p.conn }
func (p *fakeProc) Wait() Exit        { return <-p.exit }
func (p *fakeProc) Signal(syscall.Signal) error {
	p.end(Exit{Code: 0})
	return nil
}
func (p *fakeProc) KillGroup() error {
	p.end(Exit{Code: -1, Signal: syscall.SIGKILL})
	return nil
}

func (l *fakeLauncher) last() *fakeProc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.procs[len(l.procs)-1]
}

func TestRunnerBackoffGrowsAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLauncher{}
		plan, _ := NewPlan(PlanConfig{Shards: 2, ShardsPerCluster: 2})
		q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
		tok, _ := secret.NewToken("t")
		s, err := New(Config{
			Plan: plan, Launcher: l, Queue: q, Token: tok,
			Policy:          RestartPolicy{Delay: time.Second, MaxDelay: 5 * time.Minute, Stable: 2 * time.Minute},
			ShutdownTimeout: 20 * time.Second, ChildWatchdog: 30 * time.Second,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- s.Run(context.Background()) }()

		// startOf waits (on the fake clock) for the n-th start.
		startOf := func(n int) time.Time {
			for {
				l.mu.Lock()
				if len(l.starts) >= n {
					st := l.starts[n-1]
					l.mu.Unlock()
					return st
				}
				l.mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}
		// crash ends the n-th process `uptime` after it started.
		crash := func(n int, uptime time.Duration) {
			time.Sleep(time.Until(startOf(n).Add(uptime)))
			l.last().end(Exit{Code: 1})
		}
		crash(1, time.Second)         // ran 1 s: restart after 1 s
		crash(2, 10*time.Millisecond) // at once: 2 s
		crash(3, 10*time.Millisecond) // 4 s
		crash(4, 3*time.Minute)       // stable for 3 min: back to 1 s
		crash(5, 10*time.Second)      // 2 s
		startOf(6)
		l.mu.Lock()
		var gaps []time.Duration
		for i := 1; i < len(l.starts); i++ {
			gaps = append(gaps, l.starts[i].Sub(l.starts[i-1]))
		}
		l.mu.Unlock()
		ms := time.Millisecond
		want := []time.Duration{2 * time.Second, 2*time.Second + 10*ms, 4*time.Second + 10*ms, 3*time.Minute + time.Second, 12 * time.Second}
		if len(gaps) != len(want) {
			t.Fatalf("gaps between starts %v, want %v", gaps, want)
		}
		for i := range want {
			if gaps[i] != want[i] {
				t.Errorf("gap %d: %v, want %v (all %v)", i, gaps[i], want[i], gaps)
			}
		}
		if c, _ := s.Store().Cluster(0); c.Restarts != 5 || c.RestartsBy[ReasonExit] != 5 {
			t.Errorf("restarts %d by reason %v", c.Restarts, c.RestartsBy)
		}
		s.Stop()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
	})
}

func TestRunnerWatchdogOnFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLauncher{silent: true}
		plan, _ := NewPlan(PlanConfig{Shards: 1, ShardsPerCluster: 1})
		q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
		tok, _ := secret.NewToken("t")
		s, _ := New(Config{
			Plan: plan, Launcher: l, Queue: q, Token: tok,
			Policy:          RestartPolicy{Delay: time.Second, MaxDelay: time.Minute, Stable: time.Minute},
			ShutdownTimeout: time.Second, ChildWatchdog: 30 * time.Second,
		}, nil)
		done := make(chan error)
		go func() { done <- s.Run(context.Background()) }()
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if c, _ := s.Store().Cluster(0); c.Restarts != 0 {
			t.Fatalf("killed before the watchdog: %+v", c)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if c, _ := s.Store().Cluster(0); c.RestartsBy[ReasonWatchdog] != 1 {
			t.Fatalf("not killed 31 s into silence: %+v", c)
		}
		s.Stop()
		<-done
	})
}

// failingLauncher fails every start with err.
type failingLauncher struct {
	err    error
	mu     sync.Mutex
	starts int
}

func (l *failingLauncher) Launch(Cluster, int) (Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.starts++
	return nil, &os.PathError{Op: "fork/exec", Path: "/bin/shardvisor", Err: l.err}
}

// A start that no retry can fix stops the supervisor with a FatalError at
// once; one that may pass (EAGAIN: the process limit) is retried.
func TestRunnerPermanentStartErrors(t *testing.T) {
	for _, tc := range []struct {
		err   syscall.Errno
		fatal bool
		want  string
	}{
		{syscall.E2BIG, true, "fewer shards per cluster"},
		{syscall.ENOEXEC, true, "cannot be executed"},
		{syscall.EACCES, true, "cannot be executed"},
		{syscall.EAGAIN, false, ""},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := &failingLauncher{err: tc.err}
				plan, _ := NewPlan(PlanConfig{Shards: 2, ShardsPerCluster: 2})
				q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
				tok, _ := secret.NewToken("t")
				s, err := New(Config{
					Plan: plan, Launcher: l, Queue: q, Token: tok,
					Policy:          RestartPolicy{Delay: time.Second, MaxDelay: time.Minute, Stable: 2 * time.Minute},
					ShutdownTimeout: 20 * time.Second, ChildWatchdog: 30 * time.Second,
				}, nil)
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- s.Run(context.Background()) }()
				time.Sleep(10 * time.Minute)
				synctest.Wait()
				l.mu.Lock()
				starts := l.starts
				l.mu.Unlock()
				if !tc.fatal {
					if starts < 5 {
						t.Errorf("%v: %d starts in 10 minutes, want it retried", tc.err, starts)
					}
					s.Stop()
					<-done
					return
				}
				var fe *FatalError
				select {
				case err := <-done:
					if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("Run = %v, want a FatalError saying %q", err, tc.want)
					}
				default:
					t.Fatalf("%v: still running after 10 minutes and %d starts", tc.err, starts)
				}
				if starts != 1 {
					t.Errorf("%v: %d starts, want 1", tc.err, starts)
				}
			})
		})
	}
}
