package discordtest

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// waitTimeout bounds every wait in the tests: generous, for a busy 2-core
// machine under the race detector.
const waitTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newTestServer(t *testing.T, o Options) *Server {
	t.Helper()
	srv, err := NewServer(o)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

func waitFor(t *testing.T, srv *Server, what string, cond func(Record) bool) Record {
	t.Helper()
	r, err := srv.WaitFor(testContext(t), cond)
	if err != nil {
		b, _ := json.MarshalIndent(r, "", " ")
		t.Fatalf("waiting for %s: %v\nrecord: %s", what, err, truncate(string(b), 20000))
	}
	return r
}

// newBot returns a discordgo session pointed at srv that does not reconnect
// by itself; the caller opens it. It is closed at cleanup.
func newBot(t *testing.T, srv *Server, shard, count int) *discordgo.Session {
	t.Helper()
	s, err := discordgo.New("Bot " + srv.Token())
	if err != nil {
		t.Fatal(err)
	}
	s.Client = srv.Client()
	s.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	s.ShardID, s.ShardCount = shard, count
	s.ShouldReconnectOnError = false
	t.Cleanup(func() { s.Close() })
	return s
}

// settled reports whether every open connection carrying a session of
// shard has sent a heartbeat: discordgo sends its first one from the
// goroutine Open starts as it returns.
// Closing a discordgo session before that races with Open into a
// reconnect that outlives the test (with ShouldReconnectOnError).
func settled(r Record, shard int) bool {
	n := 0
	for _, c := range r.Connections {
		if c.ClosedBy == "" && c.SessionID != "" && c.Shard == shard {
			if c.Heartbeats < 1 {
				return false
			}
			n++
		}
	}
	return n > 0
}

// waitSettled waits until one session of (shard, count) is live and its
// discordgo client heartbeats. Injecting a fault before that races with
// discordgo's Open: its heartbeat goroutine may start late, write to the
// old socket and close the new one with 1000, ending the session (a
// discordgo bug real Discord can trigger too).
func waitSettled(t *testing.T, srv *Server, shard, count int) Record {
	t.Helper()
	return waitFor(t, srv, "a settled live session", func(r Record) bool {
		return r.Shard(shard, count).Live == 1 && settled(r, shard)
	})
}

// closeBots closes sessions in parallel: discordgo's Close sleeps a second.
func closeBots(bots ...*discordgo.Session) {
	var wg sync.WaitGroup
	for _, b := range bots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Close()
		}()
	}
	wg.Wait()
}

// events collects the dispatches a discordgo session sees.
type events struct {
	mu   sync.Mutex
	list []*discordgo.Event
	sig  *signal
}

func newEvents() *events { return &events{sig: newSignal()} }

func (e *events) add(_ *discordgo.Session, ev *discordgo.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
	e.sig.notify()
}

// waitCount waits until n events of type typ ("" any) were seen.
func (e *events) waitCount(t *testing.T, typ string, n int) {
	t.Helper()
	waitClient(t, e.sig, fmt.Sprintf("%d %q events", n, typ), func() bool {
		if typ == "" {
			return len(e.snapshot()) >= n
		}
		return e.count(typ) >= n
	})
}

func (e *events) snapshot() []*discordgo.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*discordgo.Event(nil), e.list...)
}

func (e *events) count(typ string) int {
	n := 0
	for _, ev := range e.snapshot() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// waitUntil polls nothing: it waits on a channel that f signals; it exists
// for client-side conditions, checked each time notify is called.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// waitClient waits until cond holds, re-checking whenever sig fires.
func waitClient(t *testing.T, sig *signal, what string, cond func() bool) {
	t.Helper()
	ctx := testContext(t)
	for {
		ch := sig.wait()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// payload is a decoded gateway frame.
type payload struct {
	Op     int             `json:"op"`
	S      *int64          `json:"s"`
	T      string          `json:"t"`
	D      json.RawMessage `json:"d"`
	Binary bool            `json:"-"`
}

// rawClient is a bare gorilla gateway client.
type rawClient struct {
	t      *testing.T
	ws     *websocket.Conn
	stream *zstream // compress=zlib-stream
}

// zstream inflates a zlib-stream connection: one zlib reader across all
// messages, fed message by message from the websocket, as Discord's
// documentation describes. It is the io.ByteReader under that reader, so
// flate reads no further than the message it decodes.
type zstream struct {
	ws      *websocket.Conn
	buf     []byte
	binary  bool  // every message so far was binary
	badTail error // a message did not end in 00 00 ff ff
	dec     *json.Decoder
}

var zlibSuffix = []byte{0, 0, 0xff, 0xff}

func (z *zstream) fill() error {
	for len(z.buf) == 0 {
		z.ws.SetReadDeadline(time.Now().Add(waitTimeout))
		mt, b, err := z.ws.ReadMessage()
		if err != nil {
			return err
		}
		if mt != websocket.BinaryMessage {
			z.binary = false
		}
		if !bytes.HasSuffix(b, zlibSuffix) && z.badTail == nil {
			z.badTail = fmt.Errorf("message of %d bytes does not end in 00 00 ff ff: % x", len(b), b[max(0, len(b)-8):])
		}
		z.buf = b
	}
	return nil
}

func (z *zstream) Read(p []byte) (int, error) {
	if err := z.fill(); err != nil {
		return 0, err
	}
	n := copy(p, z.buf)
	z.buf = z.buf[n:]
	return n, nil
}

func (z *zstream) ReadByte() (byte, error) {
	if err := z.fill(); err != nil {
		return 0, err
	}
	b := z.buf[0]
	z.buf = z.buf[1:]
	return b, nil
}

// dialRaw connects to srv's gateway and returns after HELLO.
func dialRaw(t *testing.T, srv *Server, query string) *rawClient {
	t.Helper()
	c := dialRawNoHello(t, srv, query)
	p := c.read()
	if p.Op != 10 {
		t.Fatalf("first frame: op %d, want 10 HELLO", p.Op)
	}
	return c
}

func dialRawNoHello(t *testing.T, srv *Server, query string) *rawClient {
	t.Helper()
	if query == "" {
		query = "?v=10&encoding=json"
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(srv.GatewayURL()+query, nil)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &rawClient{t: t, ws: ws}
	if strings.Contains(query, "compress=zlib-stream") {
		c.stream = &zstream{ws: ws, binary: true}
	}
	return c
}

func (c *rawClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(websocket.TextMessage, b)
}

func (c *rawClient) sendRaw(mt int, b []byte) {
	c.t.Helper()
	c.ws.SetWriteDeadline(time.Now().Add(waitTimeout))
	if err := c.ws.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next reads one frame; it returns the close error, if any.
func (c *rawClient) next() (payload, error) {
	if z := c.stream; z != nil {
		if z.dec == nil {
			zr, err := zlib.NewReader(z) // reads the stream's header from the first message
			if err != nil {
				return payload{}, fmt.Errorf("zlib-stream: %w", err)
			}
			z.dec = json.NewDecoder(zr)
		}
		var p payload
		if err := z.dec.Decode(&p); err != nil {
			return p, err
		}
		p.Binary = z.binary
		return p, z.badTail
	}
	c.ws.SetReadDeadline(time.Now().Add(waitTimeout))
	mt, b, err := c.ws.ReadMessage()
	if err != nil {
		return payload{}, err
	}
	var p payload
	if mt == websocket.BinaryMessage {
		p.Binary = true
		z, err := zlib.NewReader(bytes.NewReader(b))
		if err != nil {
			return p, fmt.Errorf("binary frame: %w", err)
		}
		if b, err = io.ReadAll(z); err != nil {
			return p, fmt.Errorf("binary frame: %w", err)
		}
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("decode %q: %w", truncate(string(b), 200), err)
	}
	return p, nil
}

func (c *rawClient) read() payload {
	c.t.Helper()
	p, err := c.next()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// readUntil reads until a frame with op (and type t, if not "").
func (c *rawClient) readUntil(op int, t string) payload {
	c.t.Helper()
	for {
		p := c.read()
		if p.Op == op && (t == "" || p.T == t) {
			return p
		}
	}
}

// expectClose reads until the server closes and checks the code.
func (c *rawClient) expectClose(code int) {
	c.t.Helper()
	for {
		_, err := c.next()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			c.t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

func identifyPayloadFor(token string, shard, count int, intents discordgo.Intent, compress bool) map[string]any {
	return map[string]any{"op": 2, "d": map[string]any{
		"token": token, "intents": intents, "shard": []int{shard, count}, "compress": compress,
		"properties": map[string]string{"os": "linux", "browser": "test", "device": "test"},
	}}
}

func (c *rawClient) identify(srv *Server, shard, count int) (sessionID string, ready payload) {
	c.t.Helper()
	c.send(identifyPayloadFor(srv.Token(), shard, count, discordgo.IntentsGuilds, false))
	ready = c.read()
	if ready.Op != 0 || ready.T != "READY" {
		c.t.Fatalf("after IDENTIFY: op %d t %q, want READY", ready.Op, ready.T)
	}
	var d struct {
		SessionID string `json:"session_id"`
	}
	json.Unmarshal(ready.D, &d)
	return d.SessionID, ready
}

// get does a REST request to the fake with the bot token.
func restDo(t *testing.T, srv *Server, method, path, auth string, body any) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(testContext(t), method, srv.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func bot(srv *Server) string { return "Bot " + srv.Token() }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
