package discordtest

import (
	"fmt"
	"strings"
	"time"
)

// Fault injection. Shard-targeted faults act on the connections whose
// session belongs to that shard id (of any shard count); a negative shard
// means every connection that carries a session.

// Malformed names a kind of broken frame for SendMalformed.
type Malformed string

// Malformed frame kinds.
const (
	MalformedJSON      Malformed = "json"       // a text frame that is not valid JSON
	MalformedUnknownOp Malformed = "unknown_op" // a payload with op 42
	MalformedOversized Malformed = "oversized"  // a valid MESSAGE_CREATE dispatch of about 1 MiB
	MalformedBinary    Malformed = "binary"     // a binary frame that is not a zlib stream
)

// Valid reports whether m is one of the kinds above.
func (m Malformed) Valid() bool {
	switch m {
	case MalformedJSON, MalformedUnknownOp, MalformedOversized, MalformedBinary:
		return true
	}
	return false
}

// validCloseCode reports whether code may be sent in a close frame.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// shardConnsLocked lists the open connections carrying a session of shard.
func (s *Server) shardConnsLocked(shard int) []*conn {
	var out []*conn
	for c := range s.conns {
		if c.sess != nil && !c.closing && (shard < 0 || c.sess.shard == shard) {
			out = append(out, c)
		}
	}
	return out
}

// Disconnect closes the shard's connections with close code code, or with
// code 0 drops them (TCP closed, no close frame). Sessions stay resumable
// after a drop or codes 4000-4002 and the like; codes Discord documents as
// "identify anew" or fatal (4003-4005, 4007-4014) end them. It returns the
// number of connections closed; an invalid code acts on none.
func (s *Server) Disconnect(shard, code int) int {
	if code != 0 && !validCloseCode(code) {
		s.log.Warn("discordtest: disconnect: invalid close code", "code", code)
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.shardConnsLocked(shard)
	for _, c := range cs {
		s.closeConnLocked(c, code, fmt.Sprintf("fault: disconnect with %d", code))
	}
	return len(cs)
}

// Zombie stops (on) or resumes ACKing heartbeats of the shard: every
// connection carrying one of its sessions, now and later, until turned
// off. A negative shard is not accepted.
func (s *Server) Zombie(shard int, on bool) {
	if shard < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.zombie[shard] = true
	} else {
		delete(s.zombie, shard)
	}
}

// Reconnect sends op 7 RECONNECT to the shard's connections and returns how
// many; their sessions stay resumable.
func (s *Server) Reconnect(shard int) int {
	s.mu.Lock()
	cs := s.shardConnsLocked(shard)
	s.mu.Unlock()
	for _, c := range cs {
		c.send(frame{data: []byte(reconnectFrame)})
	}
	return len(cs)
}

// InvalidSession sends op 9 with d = resumable to the shard's connections
// and returns how many. The socket stays open and unidentified (a client
// may IDENTIFY or RESUME on it); the session is let go of, and ended unless
// resumable.
func (s *Server) InvalidSession(shard int, resumable bool) int {
	s.mu.Lock()
	cs := s.shardConnsLocked(shard)
	now := time.Now()
	for _, c := range cs {
		s.invalidateLocked(c, resumable, now)
	}
	s.mu.Unlock()
	return len(cs)
}

func (s *Server) invalidateLocked(c *conn, resumable bool, now time.Time) {
	s.detachLocked(c, !resumable, now, 0, ClosedByServer)
	c.ws.SetReadDeadline(time.Time{}) // no heartbeat timeout while unidentified
	c.send(frame{data: invalidSession(resumable)})
}

// RefuseResumes arms a fault: the next n RESUMEs of known, resumable
// sessions are answered op 9 d:false and their sessions ended, as when
// Discord has lost a session (or its resume window ran out). n <= 0
// disarms it.
func (s *Server) RefuseResumes(n int) {
	s.mu.Lock()
	s.refuseResumes = max(n, 0)
	s.mu.Unlock()
}

// InvalidSessionDuringGuilds arms a one-shot fault: the next session of
// shard to start is sent op 9 INVALID_SESSION (not resumable) right after
// its first after GUILD_CREATEs, instead of the rest of them, as Discord
// may do in the middle of a shard's startup burst. after is clamped to
// [0, the shard's guilds]. Calls queue up, one per session start; a
// negative shard is not accepted.
func (s *Server) InvalidSessionDuringGuilds(shard, after int) {
	if shard < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidGuilds[shard] = append(s.invalidGuilds[shard], max(after, 0))
}

// takeInvalidGuildsLocked pops the GUILD_CREATE count after which a new
// session of shard gets op 9, or -1.
func (s *Server) takeInvalidGuildsLocked(shard int) int {
	q := s.invalidGuilds[shard]
	if len(q) == 0 {
		return -1
	}
	s.invalidGuilds[shard] = q[1:]
	return q[0]
}

// invalidateDuringGuilds is the end of InvalidSessionDuringGuilds's fault:
// op 9 on c unless its session ss has moved on meanwhile.
func (s *Server) invalidateDuringGuilds(c *conn, ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.sess == ss && !c.closing {
		s.invalidateLocked(c, false, time.Now())
	}
}

// SendMalformed sends a broken frame of kind to the shard's connections and
// returns how many; 0 for an unknown kind.
func (s *Server) SendMalformed(shard int, kind Malformed) int {
	if !kind.Valid() {
		s.log.Warn("discordtest: send malformed: unknown kind", "kind", kind)
		return 0
	}
	s.mu.Lock()
	cs := s.shardConnsLocked(shard)
	sessions := make([]*session, len(cs))
	for i, c := range cs {
		sessions[i] = c.sess
	}
	s.mu.Unlock()
	for i, c := range cs {
		switch kind {
		case MalformedJSON:
			c.send(frame{raw: true, data: []byte(`{"t":"MESSAGE_CREATE","s":`)})
		case MalformedUnknownOp:
			c.send(frame{raw: true, data: []byte(`{"t":null,"s":null,"op":42,"d":{}}`)})
		case MalformedBinary:
			c.send(frame{raw: true, binary: true, data: []byte("this is not a zlib stream")})
		case MalformedOversized:
			ss := sessions[i]
			k, n := shardGuilds(s.guildTotal(), ss.shard, ss.count)
			if n == 0 {
				continue
			}
			msg := s.messageCreate(nil, s.ids.next(), k, 0, time.Now().UTC().Format(time.RFC3339Nano))
			big := strings.Repeat("x", 1<<20)
			msg = []byte(strings.Replace(string(msg), `"content":"load message 0"`, `"content":"`+big+`"`, 1))
			ss.dispatch("MESSAGE_CREATE", msg)
		}
	}
	return len(cs)
}

// SetHelloDelay delays HELLO on connections opened from now on by d.
func (s *Server) SetHelloDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.helloDelay = max(d, 0)
}

// FailREST makes the next n REST requests answer status: 429 with
// retry_after 0.25 s and rate limit headers (not global), or any other
// status with Discord's JSON error body. n <= 0 cancels a pending failure.
func (s *Server) FailREST(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 || status < 100 || status > 599 {
		s.failStatus, s.failLeft = 0, 0
		return
	}
	s.failStatus, s.failLeft = status, n
}

// ReconnectInsteadOfReady arms a one-shot fault: the next accepted IDENTIFY
// of shard is answered with op 7 RECONNECT instead of READY. It counts as a
// session start and for pacing, but no session is created. discordgo v0.29.0
// deadlocks on it (Open holds its lock while op 7 makes it close). Calls
// add up.
func (s *Server) ReconnectInsteadOfReady(shard int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reconnectReady[shard]++
}
