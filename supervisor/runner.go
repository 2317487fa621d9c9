package supervisor

import (
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// runner keeps one cluster's process running: start, watch, decide, wait,
// start again.
type runner struct {
	sup     *Supervisor
	ro      *roster // the fleet it is part of
	cluster Cluster
	log     *slog.Logger
	// roll is a rolling restart asking for a fresh process; the runner
	// answers on the channel it sends: an error if the replacement failed
	// and the old process goes on serving, else nil (then the new process
	// may still be on its way to ready).
	roll chan chan error
	// resume is what the next process is handed: the sessions a crashed
	// one reported last (crashresume.go). Only the runner's goroutine uses it.
	resume []*wire.HandoffShard
	// started is set once the first process was started: only that one
	// takes the session dir's records (sessiondir.go).
	started bool

	mu sync.Mutex
	ch *channel // the current process's channel; nil between processes
	// unclean is set when the process had to be killed, or exited non-zero,
	// while the supervisor was stopping.
	unclean bool
}

func newRunner(s *Supervisor, ro *roster, c Cluster) *runner {
	log := s.log.With("cluster_id", c.ID)
	if ro.shadow.Load() {
		log = log.With("fleet", "next", "shard_count", ro.plan.ShardCount)
	}
	return &runner{sup: s, ro: ro, cluster: c, log: log, roll: make(chan chan error)}
}

// update applies f to the cluster's status, in its fleet's set.
func (r *runner) update(f func(*ClusterStatus)) { r.sup.store.updateIn(r.ro.set, r.cluster.ID, f) }

// channel returns the current process's channel, or nil.
func (r *runner) channel() *channel {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ch
}

func (r *runner) setChannel(ch *channel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ch = ch
}

// run returns nil when the supervisor stops, or the error that must stop it.
func (r *runner) run() error {
	var hist History
	for {
		if r.ro.isStopping() {
			r.update(func(c *ClusterStatus) { c.State = ClusterStopped })
			return nil
		}
		exit, fatal, startErr := r.runOnce()
		if r.ro.isStopping() {
			continue
		}
		if msg := permanentStartError(startErr); msg != "" {
			r.log.Error("cannot start the cluster process, and trying again cannot help; "+r.ro.givingUp(), "err", startErr)
			r.update(func(c *ClusterStatus) {
				c.State = ClusterFatal
				if c.LastExit != nil {
					c.LastExit.Message = msg
				}
			})
			r.sup.store.Event(Event{Kind: EventFatal, ClusterID: r.cluster.ID, Message: msg + "; " + r.ro.givingUp()})
			return &FatalError{ClusterID: r.cluster.ID, Message: msg}
		}
		if exit.Reason == ReasonRolling {
			r.recordRestart(exit, 0)
			continue
		}
		d := r.sup.cfg.Policy.Decide(&hist, exit, time.Now(), rand.Float64(), r.sup.budgetFactor())
		switch d.Action {
		case ActionStopFatal:
			msg := "the cluster reported a fatal configuration error"
			if fatal != nil {
				msg = fmt.Sprintf("shard %d: gateway close %d: %s", fatal.Shard, fatal.Code, fatal.Reason)
			}
			if fatal != nil && fatal.Code == closeShardingRequired {
				replaced, why := r.reshardFor(fatal)
				if replaced {
					return nil
				}
				if why != "" {
					msg += "; " + why
				}
			}
			r.log.Error("cluster exited with the fatal configuration status; restarting cannot help; "+r.ro.givingUp(),
				"pid", exit.PID, "status", exit.String(), "uptime", exit.Uptime.Round(time.Millisecond), "reason", msg)
			r.update(func(c *ClusterStatus) {
				c.State = ClusterFatal
				c.LastExit.Message = msg
			})
			r.sup.store.Event(Event{Kind: EventFatal, ClusterID: r.cluster.ID,
				Message: fmt.Sprintf("pid %d: %s, %s; %s", exit.PID, exit, msg, r.ro.givingUp())})
			return &FatalError{ClusterID: r.cluster.ID, Message: msg}
		case ActionStopIntensity:
			r.log.Error("cluster restarted too often; "+r.ro.givingUp(),
				"max_restarts", r.sup.cfg.Policy.MaxRestarts, "window", r.sup.cfg.Policy.Window)
			r.sup.store.Event(Event{Kind: EventGiveUp, ClusterID: r.cluster.ID,
				Message: fmt.Sprintf("more than %d restarts within %v; %s", r.sup.cfg.Policy.MaxRestarts, r.sup.cfg.Policy.Window, r.ro.givingUp())})
			return &IntensityError{ClusterID: r.cluster.ID, MaxRestarts: r.sup.cfg.Policy.MaxRestarts, Window: r.sup.cfg.Policy.Window}
		}
		r.recordRestart(exit, d.Delay)
		t := time.NewTimer(d.Delay)
		select {
		case <-t.C:
		case reply := <-r.roll: // a rolling restart does not wait for the backoff
			reply <- nil
		case <-r.ro.stopping:
		}
		t.Stop()
	}
}

// recordRestart logs an exit that will be followed by a new process.
func (r *runner) recordRestart(exit Exit, delay time.Duration) {
	r.log.Warn("cluster process ended; starting it again", "pid", exit.PID,
		"status", exit.String(), "reason", exit.Reason, "uptime", exit.Uptime.Round(time.Millisecond), "delay", delay.Round(time.Millisecond))
	r.update(func(c *ClusterStatus) {
		c.Restarts++
		if c.RestartsBy == nil {
			c.RestartsBy = map[Reason]int{}
		}
		c.RestartsBy[exit.Reason]++
		c.State = ClusterBackoff
		c.Backoff = delay
		c.NextStart = time.Now().Add(delay)
	})
	r.sup.store.Event(Event{Kind: EventRestart, ClusterID: r.cluster.ID,
		Message: fmt.Sprintf("pid %d ended (%s, %s) after %v; starting again in %v", exit.PID, exit, exit.Reason,
			exit.Uptime.Round(time.Millisecond), delay.Round(time.Millisecond))})
}

// runOnce starts one process and supervises it until it has exited; the
// error is the one that kept it from starting.
// A rolling restart that hands the sessions over replaces the process
// without runOnce returning: it goes on with the replacement.
func (r *runner) runOnce() (Exit, *wire.Fatal, error) {
	var sessions iter.Seq[*wire.HandoffShard]
	cause := ""
	switch first := !r.started; {
	case len(r.resume) > 0:
		sessions, cause = slices.Values(r.resume), wire.CauseCrash
		r.resume = nil
	case first && !r.ro.shadow.Load() && r.sup.sessions != nil && r.sup.sessions.any(r.cluster.Shards):
		sessions, cause = r.sup.sessions.take(r.cluster.Shards, r.log), wire.CauseSupervisorRestart
	}
	r.started = true
	g, err := r.launch(cause)
	if err != nil {
		r.log.Error("start cluster process", "err", err)
		exit := Exit{Code: -1, Reason: ReasonExit}
		r.recordExit(exit, 0)
		return exit, nil, err
	}
	r.takeOver(g)
	if cause != "" {
		r.sup.wg.Add(1)
		go func() { defer r.sup.wg.Done(); r.feed(g, sessions, cause) }()
	}
	for {
		exit, next := r.supervise(g)
		if next != nil {
			g = next
			continue
		}
		exit.PID = g.pid
		_ = g.proc.KillGroup() // whatever it left behind in its process group
		g.ch.close()
		r.setChannel(nil)
		if r.sup.cfg.ResumeAfterCrash && exit.Reason != ReasonStop && exit.Reason != ReasonRolling && !r.ro.isStopping() {
			r.resume = g.ch.takeSessions(time.Now())
		}
		r.recordExit(exit, g.pid)
		return exit, g.ch.fatalReport(), nil
	}
}

// supervise waits for the process to exit, ending it first when it must go;
// or, after a rolling restart's handoff, returns its replacement.
func (r *runner) supervise(g *generation) (Exit, *generation) {
	proc, ch, exited := g.proc, g.ch, g.exited
	cfg := r.sup.cfg
	watch := time.NewTicker(min(cfg.ChildWatchdog/4, time.Second))
	defer watch.Stop()
	for {
		select {
		case e := <-exited:
			return e, nil
		case err := <-ch.broken:
			r.log.Error("cutting off cluster process", "pid", proc.PID(), "err", err)
			_ = proc.KillGroup()
			e := <-exited
			e.Reason = ReasonProtocol
			return e, nil
		case <-watch.C:
			if silent := time.Since(ch.lastHeard()); silent > cfg.ChildWatchdog {
				r.log.Error("cluster process silent on its channel; killing it", "pid", proc.PID(),
					"silent", silent.Round(time.Millisecond), "child_watchdog", cfg.ChildWatchdog)
				_ = proc.KillGroup()
				e := <-exited
				e.Reason = ReasonWatchdog
				return e, nil
			}
		case reply := <-r.roll:
			if !cfg.NoHandoff && ch.canHandoff() {
				next, err := r.handoff(g)
				reply <- err
				if next != nil {
					return Exit{}, next
				}
				continue
			}
			reply <- nil
			r.log.Info("rolling restart: stopping cluster process", "pid", proc.PID())
			ch.retire()
			e := r.stop(proc, exited, time.After(cfg.ShutdownTimeout))
			if !r.ro.isStopping() {
				e.Reason = ReasonRolling
			}
			return e, nil
		case <-r.ro.stopping:
			ch.retire()
			r.update(func(c *ClusterStatus) { c.State = ClusterStopping })
			// The supervisor stopping keeps the sessions (-session-dir) and
			// is bounded by its own shutdown timeout; a fleet retired by a
			// reshard closes them (another fleet serves the bot) and is
			// bounded here.
			var timeout <-chan time.Time
			if !r.sup.isStopping() {
				timeout = time.After(cfg.ShutdownTimeout)
			} else if r.sup.sessions != nil && ch.canHandoff() && r.ro == r.sup.live() {
				r.park(g) // a reshard's next fleet, stopped with it, keeps nothing: its shard count is not the plan's
			}
			e := r.stop(proc, exited, timeout)
			if e.Signal != 0 || e.Code != 0 {
				r.mu.Lock()
				r.unclean = true
				r.mu.Unlock()
			}
			e.Reason = ReasonStop
			return e, nil
		}
	}
}

// stop sends SIGTERM and waits for the exit; when timeout (nil: none) or
// the supervisor's hurry comes first, it kills the whole process group.
func (r *runner) stop(proc Process, exited chan Exit, timeout <-chan time.Time) Exit {
	_ = proc.Signal(syscall.SIGTERM)
	select {
	case e := <-exited:
		return e
	case <-timeout:
	case <-r.sup.hurry:
	}
	r.log.Warn("cluster process did not stop in time; killing it", "pid", proc.PID())
	_ = proc.KillGroup()
	return <-exited
}

func (r *runner) recordExit(exit Exit, pid int) {
	now := time.Now()
	r.update(func(c *ClusterStatus) {
		le := &LastExit{Status: exit.String(), Code: exit.Code, Reason: exit.Reason, At: now, Uptime: exit.Uptime}
		if exit.Signal != 0 {
			le.Signal = exit.Signal.String()
		}
		c.LastExit = le
		c.PID, c.Resumable = 0, 0
		c.State = ClusterStopped
		c.resetShards(now)
	})
	if pid != 0 && exit.Reason == ReasonStop {
		r.log.Info("cluster process stopped", "pid", pid, "status", exit.String(), "uptime", exit.Uptime.Round(time.Millisecond))
	}
}

// permanentStartError says what is wrong when err, from starting a cluster
// process, is one that no retry can fix: the environment and arguments too
// large for the kernel, or a binary that cannot be executed. Otherwise "".
func permanentStartError(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.E2BIG):
		return fmt.Sprintf("start the cluster process: %v: its arguments and environment (the shard ids among them) are larger than the kernel allows; plan fewer shards per cluster", err)
	case errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("start the cluster process: %v: the binary cannot be executed", err)
	}
	return ""
}
