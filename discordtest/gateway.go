package discordtest

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Gateway connection limits and timings.
const (
	maxPayload   = 4096             // bigger client payloads close with 4002, as on Discord
	readLimit    = 1 << 20          // beyond this gorilla itself closes with 1009
	maxQueue     = 1 << 16          // frames queued for a client that does not read: drop it
	writeTimeout = 10 * time.Second // a client that does not read for this long is dropped
	closeGrace   = time.Second      // after a close frame, wait this long for the client's
	sendWindow   = 60 * time.Second // the window of SendRateLimit
)

// frame is one outgoing websocket message.
type frame struct {
	data   []byte
	sess   *session // set for dispatches: counts as delivered to it
	raw    bool     // never payload-compressed (malformed frames, HELLO); still in a zlib-stream
	binary bool     // with raw: a binary message sent as is, outside any zlib-stream
	close  bool     // a close frame with code and data as the reason
	code   int
	drop   bool // close TCP at once, no close frame
}

// conn is one gateway websocket connection. The handler goroutine reads and
// handles client payloads; a writer goroutine writes the queue, so nothing
// that sends to a client ever blocks on it.
//
// Locking: sess, live and closing are guarded by Server.mu; the queue by
// qmu. compress and closingFlag are atomics read by the writer and reader;
// stream is set before the connection is served and never changes.
type conn struct {
	id      uint64
	srv     *Server
	ws      *websocket.Conn
	opened  time.Time
	stream  bool // compress=zlib-stream: every message goes through one zlib stream
	version int  // the URL's v (9 or 10; 10 when absent): READY's v

	sess        *session
	live        bool
	closing     bool
	closingFlag atomic.Bool // mirrors closing for the reader
	compress    atomic.Bool // zlib from READY on

	sends      []time.Time // reader only: times of the last SendRateLimit payloads
	sendCount  int         // reader only
	heartbeats int         // reader only

	qmu     sync.Mutex
	queue   []frame
	qclosed bool
	wake    chan struct{}

	readerDone chan struct{}
	writerDone chan struct{}
}

// serveGateway upgrades to a websocket, sends HELLO and serves the
// connection until it ends.
func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("encoding"); e != "" && e != "json" {
		http.Error(w, "discordtest: encoding="+e+" is not supported; use json", http.StatusBadRequest)
		return
	}
	// Discord offers zlib-stream and zstd-stream and documents no answer to
	// other values; the fake serves zlib-stream and refuses the upgrade for
	// the rest (zstd needs a library outside the standard one).
	stream := false
	switch c := q.Get("compress"); c {
	case "":
	case "zlib-stream":
		stream = true
	default:
		http.Error(w, "discordtest: transport compression "+c+" is not supported; use zlib-stream", http.StatusBadRequest)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("discordtest: upgrade", "err", err)
		return // the upgrader has answered
	}
	ws.SetReadLimit(readLimit)
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.nextConn++
	c := &conn{
		id:         s.nextConn,
		srv:        s,
		ws:         ws,
		opened:     now,
		stream:     stream,
		version:    10,
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if v, err := strconv.Atoi(q.Get("v")); err == nil {
		c.version = v
	}
	s.conns[c] = struct{}{}
	delay := s.helloDelay
	s.mu.Unlock()
	s.rec.connOpened(c.id, now, r.URL.Path)
	s.log.Debug("discordtest: connection", "conn", c.id, "remote", r.RemoteAddr)

	go c.writeLoop()
	c.serve(q.Get("v"), delay)
	close(c.readerDone)
	<-c.writerDone
	ws.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.rec.conn(c.id, func(cr *ConnRecord) { cr.Closed = time.Now() })
}

// serve sends HELLO (after the configured delay) and reads until the
// connection fails or closes.
func (c *conn) serve(version string, helloDelay time.Duration) {
	s := c.srv
	if version != "" && version != "9" && version != "10" {
		s.closeConn(c, 4012, "invalid API version "+version)
		c.drainUntilClosed()
		return
	}
	if helloDelay > 0 {
		t := time.NewTimer(helloDelay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
		}
	}
	ms := (s.opts.HeartbeatInterval + time.Millisecond - 1) / time.Millisecond
	c.send(frame{raw: true, data: []byte(`{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":` +
		strconv.FormatInt(int64(ms), 10) + `,"_trace":["discordtest"]}}`)})
	for {
		mt, data, err := c.ws.ReadMessage()
		at := time.Now()
		if err != nil {
			s.readerEnded(c, err, at)
			return
		}
		if c.closingFlag.Load() {
			continue // closing: wait for the client's close frame
		}
		c.handle(mt, data, at)
	}
}

// drainUntilClosed reads and discards until the connection fails; the
// writer closes it after the close frame and closeGrace.
func (c *conn) drainUntilClosed() {
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			return
		}
	}
}

// readerEnded handles the end of reading: a client close frame, a dropped
// connection, or a heartbeat timeout.
func (s *Server) readerEnded(c *conn, err error, at time.Time) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.closeConn(c, 4009, "session timed out: no heartbeat")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closing {
		return
	}
	c.setClosing()
	code, by, reason := 0, ClosedByDrop, err.Error()
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code, by, reason = ce.Code, ClosedByClient, ce.Text
	}
	// A client closing with 1000 or 1001 ends its session; any other code
	// and a drop keep it resumable.
	end := by == ClosedByClient && (code == websocket.CloseNormalClosure || code == websocket.CloseGoingAway)
	s.detachLocked(c, end, at, code, by)
	s.rec.conn(c.id, func(cr *ConnRecord) { cr.CloseCode, cr.ClosedBy, cr.Reason = code, by, reason })
	c.qclose()
}

func (c *conn) setClosing() {
	c.closing = true
	c.closingFlag.Store(true)
}

// closeConn closes c from the server side with code (0: drop TCP without a
// close frame), letting go of its session. Codes that Discord documents as
// "identify anew" or fatal end the session; others leave it resumable.
func (s *Server) closeConn(c *conn, code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeConnLocked(c, code, reason)
}

func (s *Server) closeConnLocked(c *conn, code int, reason string) {
	if c.closing {
		return
	}
	c.setClosing()
	by := ClosedByServer
	if code == 0 {
		by = ClosedByDrop
	}
	s.detachLocked(c, !resumableServerClose(code), time.Now(), code, by)
	s.rec.conn(c.id, func(cr *ConnRecord) { cr.CloseCode, cr.ClosedBy, cr.Reason = code, by, reason })
	s.log.Debug("discordtest: closing", "conn", c.id, "code", code, "reason", reason)
	if code == 0 {
		c.sendFinal(frame{drop: true})
	} else {
		c.sendFinal(frame{close: true, code: code, data: []byte(truncate(reason, 123))})
	}
}

func resumableServerClose(code int) bool {
	switch code {
	case 4003, 4004, 4005, 4007, 4008, 4009, 4010, 4011, 4012, 4013, 4014:
		return false
	}
	return true
}

// detachLocked lets go of c's session (ending it if end), and records how.
// Caller holds s.mu.
func (s *Server) detachLocked(c *conn, end bool, at time.Time, code int, by ClosedBy) {
	ss := c.sess
	if ss == nil {
		return
	}
	ss.mu.Lock()
	if ss.conn == c {
		ss.conn = nil
		ss.detached = at
	}
	if end {
		ss.ended = true
		ss.ring = replayRing{}
	}
	ss.mu.Unlock()
	c.sess = nil
	if c.live {
		c.live = false
		s.rec.liveDelta(ss.key(), -1)
	}
	s.rec.session(ss.id, func(sr *SessionRecord) {
		sr.End, sr.CloseCode, sr.ClosedBy, sr.Resumable = at, code, by, !end
	})
}

// send queues f unless the connection is closing. A client that lets
// maxQueue frames pile up is dropped.
func (c *conn) send(f frame) {
	c.qmu.Lock()
	if c.qclosed {
		c.qmu.Unlock()
		return
	}
	c.queue = append(c.queue, f)
	if len(c.queue) > maxQueue {
		c.queue = append(c.queue[:0], frame{drop: true})
		c.qclosed = true
	}
	c.qmu.Unlock()
	c.poke()
}

// sendFinal queues a close or drop frame and accepts nothing after it.
func (c *conn) sendFinal(f frame) {
	c.qmu.Lock()
	if !c.qclosed {
		c.queue = append(c.queue, f)
		c.qclosed = true
	}
	c.qmu.Unlock()
	c.poke()
}

// qclose stops the queue; the writer exits once it is written.
func (c *conn) qclose() {
	c.qmu.Lock()
	c.qclosed = true
	c.qmu.Unlock()
	c.poke()
}

func (c *conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) backlog() int {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return len(c.queue)
}

// writeLoop writes queued frames in order until a final frame, a write
// error, or the end of the queue after qclose.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var (
		batch  []frame
		counts = make(map[string]int64)
		zbuf   bytes.Buffer
		zw     *zlib.Writer // per message, or the connection's stream
	)
	if c.stream {
		zw = zlib.NewWriter(&zbuf)
	}
	for {
		c.qmu.Lock()
		batch, c.queue = c.queue, batch[:0]
		closed := c.qclosed
		c.qmu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			select {
			case <-c.wake:
			case <-c.readerDone:
				c.qclose()
			}
			continue
		}
		c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		for i, f := range batch {
			var err error
			switch {
			case f.drop:
				c.ws.Close()
				return
			case f.close:
				msg := websocket.FormatCloseMessage(f.code, string(f.data))
				if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeTimeout)); err == nil {
					t := time.NewTimer(closeGrace)
					select {
					case <-c.readerDone:
					case <-t.C:
					case <-c.srv.done:
					}
					t.Stop()
				}
				c.ws.Close()
				return
			case f.raw && f.binary:
				err = c.ws.WriteMessage(websocket.BinaryMessage, f.data)
			case c.stream:
				// One zlib stream for the connection; a sync flush ends
				// each message with 00 00 ff ff.
				zbuf.Reset()
				zw.Write(f.data)
				zw.Flush()
				err = c.ws.WriteMessage(websocket.BinaryMessage, zbuf.Bytes())
			case !f.raw && c.compress.Load():
				zbuf.Reset()
				if zw == nil {
					zw = zlib.NewWriter(&zbuf)
				} else {
					zw.Reset(&zbuf)
				}
				zw.Write(f.data)
				zw.Close()
				err = c.ws.WriteMessage(websocket.BinaryMessage, zbuf.Bytes())
			default:
				err = c.ws.WriteMessage(websocket.TextMessage, f.data)
			}
			if err != nil {
				c.srv.log.Debug("discordtest: write", "conn", c.id, "err", err)
				c.ws.Close() // the reader fails and records the drop
				c.qclose()
				clear(batch)
				return
			}
			if f.sess != nil {
				counts[f.sess.id]++
			}
			batch[i] = frame{}
		}
		if len(counts) > 0 {
			c.srv.rec.delivered(counts)
			clear(counts)
		}
	}
}

// allowSend applies SendRateLimit: it records a payload received at at and
// reports whether the client stayed within the limit.
func (c *conn) allowSend(at time.Time) bool {
	c.sendCount++
	limit := c.srv.opts.SendRateLimit
	if limit < 0 {
		return true
	}
	if len(c.sends) < limit {
		c.sends = append(c.sends, at)
		return true
	}
	oldest := c.sends[0]
	copy(c.sends, c.sends[1:])
	c.sends[len(c.sends)-1] = at
	return at.Sub(oldest) >= sendWindow
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func errText(op string, err error) string { return fmt.Sprintf("%s: %v", op, err) }
