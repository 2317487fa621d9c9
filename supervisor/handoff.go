package supervisor

import (
	"fmt"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// The handoff of a rolling restart (internal/wire's handoff.go has the
// protocol). The replacement starts first and must say hello; only then is
// the old process asked to freeze its shards and hand them over, and what
// it sends is relayed to the replacement as it comes. The old process is
// told to stop only once the replacement has every shard ready; if the
// replacement dies, hangs or breaks the protocol before that, the old
// process is told to resume its own sessions and goes on serving, and the
// rolling restart stops with the reason.

// Handoff timeouts: for the replacement's hello, for the old process's
// freeze and transfer, and for the replacement's shards to be ready.
const (
	handoffHelloTimeout = 30 * time.Second
	handoffSendTimeout  = time.Minute
	handoffReadyTimeout = 2 * time.Minute
)

// generation is one cluster process under supervision.
type generation struct {
	proc    Process
	ch      *channel
	exited  chan Exit // Wait's result; whoever takes it without ending puts it back
	pid     int
	started time.Time
}

// launch starts a process of the cluster; with a cause (a wire Cause
// constant) its welcome tells it to wait for a handoff.
func (r *runner) launch(cause string) (*generation, error) {
	started := time.Now()
	proc, err := r.sup.cfg.Launcher.Launch(r.cluster, r.ro.plan.ShardCount)
	if err != nil {
		return nil, err
	}
	ch := newChannel(r.cluster, proc.Channel(), r.sup.cfg.Queue, r.sup.store, r.log)
	ch.set, ch.shadow = r.ro.set, r.ro.shadow.Load()
	ch.fleet.router = r.sup.fleet
	ch.rest = r.sup.rest
	ch.start(&wire.Welcome{Token: r.sup.cfg.Token, Handoff: cause != "", HandoffCause: cause, Checkpoint: r.sup.cfg.ResumeAfterCrash,
		RESTTickets: r.sup.rest != nil, Shadow: ch.shadow})
	g := &generation{proc: proc, ch: ch, exited: make(chan Exit, 1), pid: proc.PID(), started: started}
	go func() { g.exited <- proc.Wait() }()
	return g, nil
}

// takeOver makes g the cluster's process: its channel answers scrapes and
// its statuses are the cluster's.
func (r *runner) takeOver(g *generation) {
	r.setChannel(g.ch)
	r.log.Info("cluster process started", "pid", g.pid, "shards", FormatIDs(r.cluster.Shards))
	r.update(func(c *ClusterStatus) {
		c.State, c.PID, c.StartedAt = ClusterStarting, g.pid, g.started
		c.Generation++
		c.Backoff, c.NextStart = 0, time.Time{}
		c.resetShards(g.started)
	})
	g.ch.unmute()
	if g.ch.shadow && !r.ro.shadow.Load() { // started in shadow as its fleet went live (reshard.go)
		g.ch.goLive()
	}
}

// canHandoff reports whether the child said it takes part in handoffs.
func (ch *channel) canHandoff() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.hello != nil && ch.hello.Handoff
}

// unmute stores the child's statuses again, the last one at once.
func (ch *channel) unmute() {
	ch.muted.Store(false)
	ch.mu.Lock()
	last := ch.last
	ch.mu.Unlock()
	if last != nil {
		ch.store.updateIn(ch.set, ch.cluster.ID, func(c *ClusterStatus) { c.setShards(last.Shards, time.Now()) })
	}
}

// release lets a replacement's identify requests into the queue.
func (ch *channel) release() {
	if ch.hold != nil {
		select {
		case <-ch.hold:
		default:
			close(ch.hold)
		}
	}
}

// relay forwards one handoff message of this (old) child to the
// replacement, waiting for room in its queue: the old child's reader waits
// meanwhile, which paces it. A handoff nobody asked for breaks the protocol.
func (ch *channel) relay(m wire.Message) error {
	_, end := m.(*wire.HandoffEnd)
	ch.mu.Lock()
	to, park, dropping := ch.relayTo, ch.parkTo, ch.dropping
	if dropping && end {
		ch.dropping = false
	}
	ch.mu.Unlock()
	switch {
	case dropping:
		return nil // the rest of an aborted handoff
	case park != nil:
		if err := park.take(m); err != nil {
			return err
		}
	case to == nil:
		return fmt.Errorf("%s nobody asked for", m.Type())
	default:
		select {
		case to.out <- m:
		case <-to.ctx.Done(): // the replacement is gone: the runner sees it
		case <-ch.ctx.Done():
		}
	}
	if end {
		ch.mu.Lock()
		ch.relayTo, ch.parkTo = nil, nil
		ch.mu.Unlock()
		select {
		case ch.handedEnd <- m.(*wire.HandoffEnd):
		default:
		}
	}
	return nil
}

// abortHandoff tells the child to resume its own sessions, and drops what
// it still sends of the handoff (its HandoffEnd may still be to come),
// whether it was relayed or parked.
func (ch *channel) abortHandoff(why string) {
	ch.mu.Lock()
	if ch.relayTo != nil || ch.parkTo != nil {
		ch.relayTo, ch.parkTo, ch.dropping = nil, nil, true
	}
	ch.mu.Unlock()
	ch.send(&wire.HandoffAbort{Reason: why})
}

// handoff replaces the process old by a new one that takes its sessions
// over. It returns the new generation, now the cluster's, with old retiring
// in the background; or an error, and then old goes on serving.
func (r *runner) handoff(old *generation) (*generation, error) {
	r.log.Info("rolling restart: starting the replacement before handing over", "pid", old.pid)
	nw, err := r.launch(wire.CauseRollingRestart)
	if err != nil {
		return nil, fmt.Errorf("start the new process: %w; the old one goes on serving", err)
	}
	fail := func(why string) error {
		_ = nw.proc.KillGroup()
		e := <-nw.exited
		nw.ch.close()
		r.log.Error("rolling restart: the replacement failed; the old process goes on serving", "pid", nw.pid, "status", e.String(), "reason", why)
		return fmt.Errorf("%s (%s); the old process goes on serving", why, e.String())
	}

	// 1. The replacement proves that it runs.
	helloT := time.NewTimer(handoffHelloTimeout)
	defer helloT.Stop()
	select {
	case <-nw.ch.helloed:
	case e := <-nw.exited:
		nw.exited <- e
		return nil, fail("the new process exited before it said hello")
	case err := <-nw.ch.broken:
		return nil, fail(fmt.Sprintf("the new process broke the channel protocol: %v", err))
	case <-helloT.C:
		return nil, fail(fmt.Sprintf("the new process did not say hello within %v", handoffHelloTimeout))
	case <-r.sup.stopping:
		return nil, fail("the supervisor is stopping")
	}
	if !nw.ch.canHandoff() {
		r.log.Info("rolling restart: the new process takes no handoff; stopping the old one first", "pid", nw.pid)
		return r.replaceWithoutHandoff(old, nw), nil
	}

	// 2. The old process freezes its shards and hands them over.
	old.ch.muted.Store(true)
	old.ch.mu.Lock()
	old.ch.relayTo = nw.ch
	old.ch.mu.Unlock()
	asked := time.Now()
	old.ch.send(&wire.HandoffRequest{})
	abort := func(why string) error { // the replacement first: never two live sessions of a shard
		err := fail(why)
		old.ch.abortHandoff(why)
		old.ch.unmute()
		return err
	}
	sendT := time.NewTimer(handoffSendTimeout)
	defer sendT.Stop()
	select {
	case end := <-old.ch.handedEnd:
		if end.Reason != "" {
			old.ch.unmute()
			r.log.Warn("rolling restart: the old process could not hand over; stopping it first", "pid", old.pid, "reason", end.Reason)
			return r.replaceWithoutHandoff(old, nw), nil
		}
	case e := <-nw.exited:
		nw.exited <- e
		return nil, abort("the new process exited during the handoff")
	case err := <-nw.ch.broken:
		return nil, abort(fmt.Sprintf("the new process broke the channel protocol: %v", err))
	case err := <-old.ch.broken:
		old.ch.broken <- err // supervise cuts it off
		return nil, abort(fmt.Sprintf("the old process broke the channel protocol: %v", err))
	case <-sendT.C:
		return nil, abort(fmt.Sprintf("the old process did not hand over within %v", handoffSendTimeout))
	case <-r.sup.stopping:
		return nil, abort("the supervisor is stopping")
	}
	handed := time.Now()
	nw.ch.release() // shards that could not be handed over identify

	// 3. The replacement is ready before the old process goes.
	readyT := time.NewTimer(handoffReadyTimeout)
	defer readyT.Stop()
	select {
	case <-nw.ch.allReady:
	case e := <-nw.exited:
		nw.exited <- e
		return nil, abort("the new process exited before it was ready")
	case err := <-nw.ch.broken:
		return nil, abort(fmt.Sprintf("the new process broke the channel protocol: %v", err))
	case <-readyT.C:
		return nil, abort(fmt.Sprintf("the new process was not ready within %v", handoffReadyTimeout))
	case <-r.sup.stopping:
		return nil, abort("the supervisor is stopping")
	}
	r.log.Info("rolling restart: sessions handed over", "old_pid", old.pid, "pid", nw.pid,
		"handover", handed.Sub(asked).Round(time.Millisecond), "until_ready", time.Since(asked).Round(time.Millisecond))
	r.takeOver(nw)
	r.sup.wg.Add(1)
	go func() { defer r.sup.wg.Done(); r.retire(old) }()
	return nw, nil
}

// replaceWithoutHandoff stops old as a rolling restart always did (its
// sessions close), then lets nw identify every shard.
func (r *runner) replaceWithoutHandoff(old, nw *generation) *generation {
	e := r.stop(old.proc, old.exited, time.After(r.sup.cfg.ShutdownTimeout))
	old.exited <- e
	r.retire(old)
	if nw.ch.canHandoff() { // an older binary would take the message for a protocol breach
		nw.ch.send(&wire.HandoffEnd{Reason: "no handoff"})
	}
	nw.ch.release()
	r.takeOver(nw)
	return nw
}

// retire stops a process whose sessions were handed over (it does not
// close them) and waits for it: commands it still runs finish first.
func (r *runner) retire(old *generation) {
	e := r.stop(old.proc, old.exited, time.After(r.sup.cfg.ShutdownTimeout))
	_ = old.proc.KillGroup()
	old.ch.close()
	e.PID, e.Reason = old.pid, ReasonRolling
	r.log.Info("cluster process replaced by a rolling restart", "pid", old.pid, "status", e.String(), "uptime", e.Uptime.Round(time.Millisecond))
	now := time.Now()
	r.update(func(c *ClusterStatus) {
		c.Restarts++
		if c.RestartsBy == nil {
			c.RestartsBy = map[Reason]int{}
		}
		c.RestartsBy[ReasonRolling]++
		le := &LastExit{Status: e.String(), Code: e.Code, Reason: ReasonRolling, At: now, Uptime: e.Uptime}
		if e.Signal != 0 {
			le.Signal = e.Signal.String()
		}
		c.LastExit = le
	})
}
