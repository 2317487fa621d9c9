package supervisor

import (
	"fmt"
	"iter"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// Crash resumes (-resume-after-crash; the protocol is in internal/wire's
// checkpoint.go). Each child reports its sessions about once a second; the
// channel keeps the last report, and nothing else sees it: not the Store,
// not a log line, not a metric. When the process ends without being asked
// to (a crash, the watchdog, a protocol breach), the runner takes the
// report and hands it to the next process of the cluster, which RESUMEs
// those sessions with an empty cache. The process is dead and its group
// killed before the next one starts, so a session is never live twice.

// crashResumeWindow is how old a report may be when the next process
// starts. Discord does not say how long it keeps a dropped session; a
// RESUME it refuses costs only a paced IDENTIFY (counted as a fallback),
// so the window is generous enough for the first restarts' backoff and no
// more.
const crashResumeWindow = 2 * time.Minute

// checkpointed stores a child's report of its sessions. Called with ch.mu
// held.
func (ch *channel) checkpointed(m *wire.SessionCheckpoint, now time.Time) error {
	if !ch.checkpoints {
		return fmt.Errorf("%s nobody asked for", m.Type())
	}
	for i := range m.Shards {
		if !ch.shards[m.Shards[i].Shard] {
			return fmt.Errorf("session checkpoint for shard %d, not one of this cluster's", m.Shards[i].Shard)
		}
	}
	ch.sessions, ch.sessionsAt = m.Shards, now
	if !ch.muted.Load() {
		ch.store.updateIn(ch.set, ch.cluster.ID, func(c *ClusterStatus) { c.Resumable = len(m.Shards) })
	}
	return nil
}

// takeSessions returns the child's last report, once, if it is younger
// than crashResumeWindow.
func (ch *channel) takeSessions(now time.Time) []*wire.HandoffShard {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s, at := ch.sessions, ch.sessionsAt
	ch.sessions = nil
	if now.Sub(at) > crashResumeWindow {
		return nil
	}
	out := make([]*wire.HandoffShard, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}

// feed hands g the sessions of a cause (a wire Cause constant) once it has
// said hello: each as HandoffShard messages (its snapshot, if any, in
// chunks), then HandoffEnd; then its identify requests are let into the
// queue (its shards without a session identify). It waits for room in g's
// queue rather than overflow it: a cluster may have thousands of shards,
// and snapshots are read as they are sent.
func (r *runner) feed(g *generation, sessions iter.Seq[*wire.HandoffShard], cause string) {
	ch := g.ch
	defer ch.release()
	select {
	case <-ch.helloed:
	case <-ch.ctx.Done():
		return
	}
	if !ch.canHandoff() { // an older binary would take the messages for a protocol breach
		return
	}
	send := func(m wire.Message) bool {
		select {
		case ch.out <- m:
			return true
		case <-ch.ctx.Done():
			return false
		}
	}
	n := 0
	for s := range sessions {
		for c := range s.Chunks() {
			if !send(c) {
				return
			}
		}
		n++
	}
	if !send(&wire.HandoffEnd{Shards: n}) {
		return
	}
	r.log.Info("handing sessions to the new process", "pid", g.pid, "cause", cause, "sessions", n,
		"shards", len(r.cluster.Shards))
}
