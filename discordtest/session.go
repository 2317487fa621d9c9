package discordtest

import (
	"strconv"
	"sync"
	"time"
)

// Replay limits: a session keeps its most recent dispatches for RESUME, at
// most replayFrames of them and replayBytes in all. A RESUME from further
// back is answered op 9 d:false, as Discord does when it cannot replay.
const (
	replayFrames = 1024
	replayBytes  = 4 << 20
	detachedLoad = time.Minute
)

// session is one gateway session: an accepted IDENTIFY, carried by at most
// one connection at a time and resumable on another.
//
// Locking: conn and ended are written holding both Server.mu and mu, so
// either lock is enough to read them. seq and ring are guarded by mu.
type session struct {
	id    string
	shard int
	count int
	// guilds is the guild count when it was identified: READY and the
	// GUILD_CREATEs of its start are about guilds below it.
	guilds         int
	largeThreshold int // of its IDENTIFY, for later GUILD_CREATEs

	mu    sync.Mutex
	conn  *conn // the live connection, nil while detached
	ended bool  // no longer resumable
	seq   int64
	ring  replayRing
	// detached is when its last connection let go of it, zero while one
	// carries it: the load generator goes on feeding a detached session
	// for detachedLoad, as Discord buffers events for a dropped session
	// that RESUME replays.
	detached time.Time

	// Used by the load generator goroutine only.
	owed   float64
	cursor int
}

func (ss *session) key() shardKey { return shardKey{ss.shard, ss.count} }

// dispatch sends an op 0 event: it takes the next sequence number, keeps the
// frame for replay and queues it on the live connection, if any. d is the
// JSON of the event's data. It reports false once the session has ended.
func (ss *session) dispatch(t string, d []byte) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.dispatchLocked(t, d)
}

func (ss *session) dispatchLocked(t string, d []byte) bool {
	if ss.ended {
		return false
	}
	ss.seq++
	f := encodeDispatch(ss.seq, t, d)
	ss.ring.push(ss.seq, f)
	if ss.conn != nil {
		ss.conn.send(frame{data: f, sess: ss})
	}
	return true
}

// backlog returns the number of frames queued and not yet written on the
// live connection, or -1 when detached.
func (ss *session) backlog() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn == nil || ss.ended {
		return -1
	}
	return ss.conn.backlog()
}

func encodeDispatch(seq int64, t string, d []byte) []byte {
	b := make([]byte, 0, len(d)+len(t)+40)
	b = append(b, `{"t":"`...)
	b = append(b, t...)
	b = append(b, `","s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"op":0,"d":`...)
	b = append(b, d...)
	b = append(b, '}')
	return b
}

// replayRing keeps the most recent dispatch frames of a session, oldest
// first. Dropping from the front reslices; append reallocates now and then,
// copying only the frames kept, so memory stays within about twice the
// limits.
type replayRing struct {
	frames []ringFrame
	bytes  int
}

type ringFrame struct {
	seq  int64
	data []byte
}

func (r *replayRing) push(seq int64, data []byte) {
	for len(r.frames) > 0 && (len(r.frames) >= replayFrames || r.bytes+len(data) > replayBytes) {
		r.bytes -= len(r.frames[0].data)
		r.frames[0] = ringFrame{}
		r.frames = r.frames[1:]
	}
	r.bytes += len(data)
	r.frames = append(r.frames, ringFrame{seq, data})
}

// since returns the frames after seq, oldest first, or false if some of
// them are no longer kept (or seq is beyond cur, the last sequence number).
func (r *replayRing) since(seq, cur int64) ([][]byte, bool) {
	if seq > cur || seq < 0 {
		return nil, false
	}
	if seq == cur {
		return nil, true
	}
	if len(r.frames) == 0 || r.frames[0].seq > seq+1 {
		return nil, false
	}
	var out [][]byte
	for _, f := range r.frames {
		if f.seq > seq {
			out = append(out, f.data)
		}
	}
	return out, true
}

// SessionSeq returns the last sequence number the session with this id
// has dispatched (replayable to a RESUME), and false for an unknown id. A
// test that stops the event stream (SetEventRate(0)) can compare it with
// what a client's handlers saw: every number from 1 to it, each once.
func (s *Server) SessionSeq(id string) (int64, bool) {
	s.mu.Lock()
	ss, ok := s.sessions[id]
	s.mu.Unlock()
	if !ok {
		return 0, false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.seq, true
}
