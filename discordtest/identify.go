package discordtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// Frames the fake sends outside dispatches.
const (
	heartbeatACK       = `{"t":null,"s":null,"op":11,"d":null}`
	invalidSessionFrom = `{"t":null,"s":null,"op":9,"d":`
	reconnectFrame     = `{"t":null,"s":null,"op":7,"d":null}`
)

func invalidSession(resumable bool) []byte {
	return []byte(fmt.Sprintf("%s%t}", invalidSessionFrom, resumable))
}

// handle acts on one client payload, read at at.
func (c *conn) handle(mt int, data []byte, at time.Time) {
	s := c.srv
	if !c.allowSend(at) {
		s.closeConn(c, 4008, fmt.Sprintf("rate limited: more than %d payloads in %v", s.opts.SendRateLimit, sendWindow))
		return
	}
	if mt != websocket.TextMessage {
		s.closeConn(c, 4002, "decode error: binary payloads are not accepted with encoding=json")
		return
	}
	if len(data) > maxPayload {
		s.closeConn(c, 4002, fmt.Sprintf("decode error: payload of %d bytes is over %d", len(data), maxPayload))
		return
	}
	var p struct {
		Op *int            `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		s.closeConn(c, 4002, errText("decode error", err))
		return
	}
	if p.Op == nil {
		s.closeConn(c, 4002, "decode error: payload has no op")
		return
	}
	switch *p.Op {
	case 1:
		c.heartbeat(p.D, at)
	case 2:
		c.identify(p.D, at)
	case 6:
		c.resume(p.D, at)
	case 3, 4, 8, 31: // presence, voice state, request members, soundboard: accepted, ignored
		s.mu.Lock()
		identified := c.sess != nil
		s.mu.Unlock()
		if !identified {
			s.closeConn(c, 4003, fmt.Sprintf("not authenticated: op %d before IDENTIFY", *p.Op))
		}
	default:
		s.closeConn(c, 4001, fmt.Sprintf("unknown opcode %d", *p.Op))
	}
	s.rec.conn(c.id, func(cr *ConnRecord) { cr.Sends, cr.Heartbeats = c.sendCount, c.heartbeats })
}

// heartbeatTimeout is how long a live session may go without a heartbeat
// before close 4009: two intervals and a second of slack for busy machines.
func (s *Server) heartbeatTimeout() time.Duration {
	return 2*s.opts.HeartbeatInterval + time.Second
}

func (c *conn) heartbeat(d json.RawMessage, at time.Time) {
	s := c.srv
	var seq *int64
	if len(d) > 0 {
		if err := json.Unmarshal(d, &seq); err != nil {
			s.closeConn(c, 4002, errText("decode error: heartbeat d", err))
			return
		}
	}
	c.heartbeats++
	s.mu.Lock()
	zombie := c.sess != nil && s.zombie[c.sess.shard]
	live := c.live
	s.mu.Unlock()
	if live {
		c.ws.SetReadDeadline(at.Add(s.heartbeatTimeout()))
	}
	if !zombie {
		c.send(frame{data: []byte(heartbeatACK)})
	}
}

type identifyPayload struct {
	Token          string          `json:"token"`
	Intents        *int64          `json:"intents"`
	Shard          *[2]int         `json:"shard"`
	Compress       bool            `json:"compress"`
	LargeThreshold int             `json:"large_threshold"`
	Properties     json.RawMessage `json:"properties"`
	Presence       json.RawMessage `json:"presence"`
}

// tokenOK accepts the token with or without the "Bot " prefix, as the
// gateway does.
func (s *Server) tokenOK(tok string) bool {
	return !s.revoked && strings.TrimPrefix(tok, "Bot ") == s.opts.Token
}

// identify applies Discord's rules to an IDENTIFY, in this order: 4005 on an
// identified socket, 4004 bad token, 4010 invalid shard, 4013 invalid
// intents, 4014 disallowed intents, 4011 too many guilds, op 9 d:false when
// the bucket's pacing is broken, token revocation when the session start
// budget is spent, then READY and the shard's GUILD_CREATEs.
func (c *conn) identify(raw json.RawMessage, at time.Time) {
	s := c.srv
	var d identifyPayload
	if err := json.Unmarshal(raw, &d); err != nil {
		s.closeConn(c, 4002, errText("decode error: identify", err))
		return
	}
	shard, count := 0, 1
	if d.Shard != nil {
		shard, count = d.Shard[0], d.Shard[1]
	}
	s.mu.Lock()
	if s.closed || c.closing {
		s.mu.Unlock()
		return
	}
	ir := IdentifyRecord{Conn: c.id, Shard: shard, ShardCount: count, Bucket: -1, At: at}
	validShard := count >= 1 && shard >= 0 && shard < count
	if validShard {
		b := shard % s.opts.MaxConcurrency
		ir.Bucket = b
		// Frames are timed as read, before this lock: two IDENTIFYs of a
		// bucket read at once may be handled out of order, and then the
		// gap is negative.
		last := s.bucketLast[b]
		if !last.IsZero() {
			ir.Gap = at.Sub(last)
		}
		if at.After(last) {
			s.bucketLast[b] = at
		}
	}
	reject := func(code int, reason string) {
		ir.Outcome, ir.CloseCode = OutcomeClosed, code
		s.rec.identify(ir)
		s.closeConnLocked(c, code, reason)
		s.mu.Unlock()
	}
	mc := s.opts.MaxConcurrency
	switch {
	case c.sess != nil:
		reject(4005, "already authenticated")
		return
	case !s.tokenOK(d.Token):
		reject(4004, "authentication failed")
		return
	case !validShard:
		reject(4010, fmt.Sprintf("invalid shard [%d, %d]", shard, count))
		return
	case mc > 1 && count%mc != 0:
		reject(4010, fmt.Sprintf("invalid shard: count %d is not a multiple of max_concurrency %d", count, mc))
		return
	case d.Intents == nil || *d.Intents < 0 || discordgo.Intent(*d.Intents)&^knownIntents != 0:
		reject(4013, "invalid intent(s)")
		return
	case discordgo.Intent(*d.Intents)&privilegedIntents&^s.opts.PrivilegedIntents != 0:
		reject(4014, "disallowed intent(s)")
		return
	case guildCount(s.guildTotal(), shard, count) > s.opts.MaxGuildsPerShard:
		reject(4011, "sharding required")
		return
	}
	if last := s.bucketAccepted[ir.Bucket]; !last.IsZero() && at.Sub(last) < s.opts.IdentifyInterval-s.opts.IdentifyTolerance {
		ir.TooSoon, ir.Outcome = true, OutcomeInvalidSession
		s.rec.identify(ir)
		s.mu.Unlock()
		c.send(frame{data: invalidSession(false)})
		return
	}
	s.refreshStartsLocked(at)
	if s.startsLeft == 0 {
		// Discord resets the token of a bot that overruns its session
		// starts and ends its sessions; the fake closes every connection
		// with 4004 and answers 401 to REST from now on.
		s.revoked = true
		ir.Outcome, ir.CloseCode = OutcomeClosed, 4004
		s.rec.identify(ir)
		s.rec.starts(0, true)
		for o := range s.conns {
			s.closeConnLocked(o, 4004, "authentication failed: session start limit reached, token reset")
		}
		s.mu.Unlock()
		return
	}
	if s.startsLeft == s.opts.SessionStartLimit {
		s.startsReset = at.Add(s.opts.SessionStartReset)
	}
	s.startsLeft--
	s.bucketAccepted[ir.Bucket] = at
	if s.reconnectReady[shard] > 0 {
		s.reconnectReady[shard]--
		ir.Outcome = OutcomeReconnect
		s.rec.identify(ir)
		s.rec.starts(s.startsLeft, false)
		s.mu.Unlock()
		c.send(frame{data: []byte(reconnectFrame)})
		return
	}

	threshold := d.LargeThreshold
	if threshold < 50 || threshold > 250 {
		threshold = 50
	}
	// The guilds of READY and of the GUILD_CREATEs that follow are those
	// of now; AddGuilds sends later ones to the session itself.
	ss := &session{id: randomToken(), shard: shard, count: count, guilds: s.guildTotal(), largeThreshold: threshold}
	s.sessions[ss.id] = ss
	cut := s.takeInvalidGuildsLocked(shard)
	ss.mu.Lock()
	ss.conn, c.sess, c.live = c, ss, true
	if s.opts.Compress && d.Compress && !c.stream { // transport compression disables payload compression
		c.compress.Store(true)
	}
	ir.Outcome, ir.SessionID = OutcomeReady, ss.id
	s.rec.identify(ir)
	s.rec.sessionStarted(SessionRecord{ID: ss.id, Shard: shard, ShardCount: count, Start: at, Resumable: true}, s.startsLeft)
	s.rec.conn(c.id, func(cr *ConnRecord) { cr.Shard, cr.ShardCount, cr.SessionID = shard, count, ss.id })
	s.rec.liveDelta(ss.key(), 1)
	s.mu.Unlock()

	c.ws.SetReadDeadline(at.Add(s.heartbeatTimeout()))
	ss.dispatchLocked("READY", s.readyPayload(ss, c.version))
	ss.mu.Unlock()
	for i, k := range guildsOf(ss.guilds, shard, count) {
		if i == cut {
			break
		}
		if !ss.dispatch("GUILD_CREATE", s.guildCreate(k, threshold)) {
			return
		}
	}
	if cut >= 0 {
		s.invalidateDuringGuilds(c, ss)
	}
}

// refreshStartsLocked starts a new session start window once the last one
// has run out.
func (s *Server) refreshStartsLocked(now time.Time) {
	if !s.startsReset.IsZero() && !now.Before(s.startsReset) {
		s.startsLeft = s.opts.SessionStartLimit
		s.startsReset = time.Time{}
		s.rec.starts(s.startsLeft, false)
	}
}

// resetAfterLocked is session_start_limit.reset_after.
func (s *Server) resetAfterLocked(now time.Time) time.Duration {
	s.refreshStartsLocked(now)
	if s.startsReset.IsZero() {
		return s.opts.SessionStartReset
	}
	return s.startsReset.Sub(now)
}

type resumePayload struct {
	Token     string `json:"token"`
	SessionID string `json:"session_id"`
	Seq       *int64 `json:"seq"`
}

// resume answers a RESUME: 4005 on an identified socket, 4004 bad token,
// op 9 d:false (socket kept open) for an unknown or ended session or one
// whose missed dispatches are no longer kept, else the missed dispatches
// with their original sequence numbers and then RESUMED. A session still
// carried by another connection is taken from it (closed with 4000).
func (c *conn) resume(raw json.RawMessage, at time.Time) {
	s := c.srv
	var d resumePayload
	if err := json.Unmarshal(raw, &d); err != nil {
		s.closeConn(c, 4002, errText("decode error: resume", err))
		return
	}
	var seq int64
	if d.Seq != nil {
		seq = *d.Seq
	}
	s.mu.Lock()
	if s.closed || c.closing {
		s.mu.Unlock()
		return
	}
	rr := ResumeRecord{Conn: c.id, SessionID: d.SessionID, Shard: -1, Seq: seq, At: at}
	reject := func(code int, reason string) {
		rr.Outcome, rr.CloseCode = OutcomeClosed, code
		s.rec.resume(rr)
		s.closeConnLocked(c, code, reason)
		s.mu.Unlock()
	}
	if c.sess != nil {
		reject(4005, "already authenticated")
		return
	}
	if !s.tokenOK(d.Token) {
		reject(4004, "authentication failed")
		return
	}
	invalid := func() {
		rr.Outcome = OutcomeInvalidSession
		s.rec.resume(rr)
		s.mu.Unlock()
		c.send(frame{data: invalidSession(false)})
	}
	ss := s.sessions[d.SessionID]
	if ss == nil || ss.ended {
		invalid()
		return
	}
	rr.Shard, rr.ShardCount = ss.shard, ss.count
	if s.refuseResumes > 0 {
		s.refuseResumes--
		if old := ss.conn; old != nil {
			s.detachLocked(old, true, at, 4000, ClosedByServer)
			s.closeConnLocked(old, 4000, "session invalidated")
		}
		ss.mu.Lock()
		ss.ended, ss.ring = true, replayRing{}
		ss.mu.Unlock()
		s.rec.session(ss.id, func(sr *SessionRecord) { sr.Resumable = false })
		invalid()
		return
	}
	if old := ss.conn; old != nil {
		s.detachLocked(old, false, at, 4000, ClosedByServer)
		s.closeConnLocked(old, 4000, "session resumed on another connection")
	}
	ss.mu.Lock()
	frames, ok := ss.ring.since(seq, ss.seq)
	if !ok {
		ss.ended = true
		ss.ring = replayRing{}
		ss.mu.Unlock()
		s.rec.session(ss.id, func(sr *SessionRecord) { sr.Resumable = false })
		invalid()
		return
	}
	ss.conn, c.sess, c.live = c, ss, true
	ss.detached = time.Time{}
	rr.Outcome, rr.Replayed = OutcomeResumed, len(frames)
	s.rec.resume(rr)
	s.rec.session(ss.id, func(sr *SessionRecord) {
		sr.End, sr.CloseCode, sr.ClosedBy, sr.Resumable = time.Time{}, 0, "", true
		sr.Resumes++
	})
	s.rec.conn(c.id, func(cr *ConnRecord) { cr.Shard, cr.ShardCount, cr.SessionID = ss.shard, ss.count, ss.id })
	s.rec.liveDelta(ss.key(), 1)
	s.mu.Unlock()

	c.ws.SetReadDeadline(at.Add(s.heartbeatTimeout()))
	for _, f := range frames {
		c.send(frame{data: f, sess: ss})
	}
	ss.dispatchLocked("RESUMED", []byte(`{"_trace":["discordtest"]}`))
	ss.mu.Unlock()
}
