package supervisor

import (
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/sessiondir"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Restarts of the whole supervisor (-session-dir; the records are
// internal/sessiondir's). On a graceful stop each process is asked for a
// handoff as in a rolling restart, but what it hands over is written to
// the session dir, one record per shard, instead of relayed; the process,
// frozen, is then stopped without closing its sessions. On the next start
// each cluster's first process is welcomed with a handoff of cause
// supervisor_restart and fed its shards' records as they are read: each
// valid one RESUMEs with its cache; the rest identify as ever. If a
// process cannot hand over in time, it is told to thaw and is stopped as
// before (its sessions close with 1000).

// Outcomes of session records: the outcome label of
// shardvisor_session_records_total (the discard reasons are sessiondir's).
const (
	recordWritten     = "written"
	recordWriteFailed = "write_failed"
	recordResumed     = "handed_over"
)

var recordOutcomes = []string{recordWritten, recordWriteFailed, recordResumed,
	sessiondir.ReasonExpired, sessiondir.ReasonForeign, sessiondir.ReasonCorrupt, sessiondir.ReasonIO}

// sessionRecords is the supervisor's session dir, and what became of its
// records.
type sessionRecords struct {
	dir      *sessiondir.Dir
	outcomes *prometheus.CounterVec
}

func newSessionRecords(dir *sessiondir.Dir) *sessionRecords {
	s := &sessionRecords{dir: dir, outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shardvisor_session_records_total",
		Help: "Session records of -session-dir by outcome: written at a stop, write_failed, handed_over to a new process at a start, or discarded as expired, foreign, corrupt or io.",
	}, []string{"outcome"})}
	for _, o := range recordOutcomes {
		s.outcomes.WithLabelValues(o)
	}
	return s
}

// any reports whether one of shards has a record to take.
func (s *sessionRecords) any(shards []int) bool {
	for _, id := range shards {
		if s.dir.Has(id) {
			return true
		}
	}
	return false
}

// take yields the valid records of shards, each read (and removed) when
// it is its turn, so that one snapshot at a time is in memory; records it
// discards are logged with the reason.
func (s *sessionRecords) take(shards []int, log *slog.Logger) iter.Seq[*wire.HandoffShard] {
	return func(yield func(*wire.HandoffShard) bool) {
		for _, id := range shards {
			h, err := s.dir.Take(id, time.Now())
			if de := (*sessiondir.DiscardError)(nil); errors.As(err, &de) {
				s.outcomes.WithLabelValues(de.Reason).Inc()
				log.Warn("session record discarded; the shard identifies", "shard_id", id, "reason", de.Reason, "detail", de.Detail)
				continue
			}
			if h == nil {
				continue
			}
			s.outcomes.WithLabelValues(recordResumed).Inc()
			if !yield(h) {
				return
			}
		}
	}
}

// parking writes one (old) child's handoff to the session dir as it
// comes: a shard's record once its last chunk is in.
type parking struct {
	recs   *sessionRecords
	shards map[int]bool // the cluster's
	log    *slog.Logger

	cur             *wire.HandoffShard // the shard whose chunks are coming
	written, failed int
	bytes           int
}

var errParkOrder = errors.New("handoff chunk out of order")

// take is the parking's part of channel.relay, for one message.
func (p *parking) take(m wire.Message) error {
	h, ok := m.(*wire.HandoffShard)
	if !ok {
		if p.cur != nil {
			return fmt.Errorf("handoff ended in the middle of shard %d", p.cur.Shard)
		}
		return nil
	}
	switch {
	case p.cur == nil && !p.shards[h.Shard]:
		return fmt.Errorf("handoff of shard %d, not one of this cluster's", h.Shard)
	case p.cur == nil:
		c := *h
		c.Snapshot = append([]byte(nil), h.Snapshot...)
		p.cur = &c
	case p.cur.Shard != h.Shard || !h.SessionID.Empty():
		return errParkOrder
	case len(p.cur.Snapshot)+len(h.Snapshot) > wire.MaxSnapshot:
		return fmt.Errorf("shard %d: snapshot larger than %d bytes", h.Shard, wire.MaxSnapshot)
	default:
		p.cur.Snapshot = append(p.cur.Snapshot, h.Snapshot...)
	}
	if h.More {
		return nil
	}
	cur := p.cur
	p.cur = nil
	if cur.SessionID.Empty() {
		return nil // no session to keep: the shard identifies next time
	}
	n, err := p.recs.dir.Write(cur, time.Now())
	clear(cur.Snapshot)
	if err != nil {
		p.failed++
		p.recs.outcomes.WithLabelValues(recordWriteFailed).Inc()
		p.log.Error("write session record; the shard will identify", "shard_id", cur.Shard, "err", err)
		return nil
	}
	p.written++
	p.bytes += n
	p.recs.outcomes.WithLabelValues(recordWritten).Inc()
	return nil
}

// park asks g's process to hand its sessions over to the session dir, at
// a stop of the supervisor; then the stop that follows does not close
// them. If the process cannot, or does not in time, it is told to thaw
// and the stop closes its sessions as without a session dir.
func (r *runner) park(g *generation) {
	ch := g.ch
	p := &parking{recs: r.sup.sessions, shards: ch.shards, log: r.log}
	ch.mu.Lock()
	ch.parkTo = p
	ch.mu.Unlock()
	asked := time.Now()
	ch.send(&wire.HandoffRequest{})
	thaw := func(why string) {
		ch.abortHandoff(why)
		r.log.Warn("stop: sessions not kept; closing them", "pid", g.pid, "reason", why)
	}
	t := time.NewTimer(min(handoffSendTimeout, r.sup.cfg.ShutdownTimeout/2))
	defer t.Stop()
	select {
	case end := <-ch.handedEnd:
		if end.Reason != "" {
			r.log.Warn("stop: the process could not hand its sessions over; closing them", "pid", g.pid, "reason", end.Reason)
			return
		}
		r.log.Info("stop: sessions kept in the session dir", "pid", g.pid, "records", p.written, "failed", p.failed,
			"bytes", p.bytes, "took", time.Since(asked).Round(time.Millisecond))
	case e := <-g.exited:
		g.exited <- e
	case err := <-ch.broken:
		ch.broken <- err
		thaw(fmt.Sprintf("the process broke the channel protocol: %v", err))
	case <-t.C:
		thaw("the process did not hand over in time")
	case <-r.sup.hurry:
	}
}
