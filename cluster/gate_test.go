package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/apiurl"
)

// TestDiscordgoPayloadsStartWithOp checks what the gate relies on in
// discordgo: that the HEARTBEAT, IDENTIFY and RESUME it writes are JSON
// text frames starting with the op field, as heartbeatPrefix,
// identifyPrefix and resumePrefix say. discordgo marshals unexported
// structs (heartbeatOp, identifyOp, resumePacket) whose first field is Op;
// reordering their fields, adding one before Op, or compressing or
// encoding the frames otherwise lets every IDENTIFY past the gate unpaced,
// and this test fails.
//
// A bare discordgo session (no gate) runs against the fake Discord; every
// byte it writes is recorded and split into websocket messages here, with a
// parser of the test's own rather than the gate's frameScanner.
func TestDiscordgoPayloadsStartWithOp(t *testing.T) {
	fake, err := discordtest.NewServer(discordtest.Options{Shards: 1, HeartbeatInterval: time.Second,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	base, _ := apiurl.Parse(fake.URL())

	// A heartbeat interval of a second: discordgo sends one at HELLO on
	// each connection, which is all the test needs, and a busy machine is
	// less likely to miss five ACKs in a row and reconnect (TestMain
	// ignores discordgo's reconnect loop, which outlives Close).
	rec := &recordingDialer{wrote: make(chan struct{}, 1)}
	s, _ := discordgo.New("Bot " + fake.Token())
	s.Client = HTTPClient(base)
	s.LogLevel = discordgo.LogError
	s.Identify.Intents = DefaultIntents
	s.Dialer = &websocket.Dialer{HandshakeTimeout: 30 * time.Second, NetDialContext: rec.dial}
	ready, resumed := make(chan struct{}, 1), make(chan struct{}, 1)
	s.AddHandler(func(*discordgo.Session, *discordgo.Ready) { ready <- struct{}{} })
	s.AddHandler(func(*discordgo.Session, *discordgo.Resumed) { resumed <- struct{}{} })
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(patience):
			t.Fatalf("no %s within %v", what, patience)
		}
	}
	wait("READY", ready)
	// A resumable close: discordgo reconnects by itself and sends RESUME.
	fake.Disconnect(0, 4000)
	wait("RESUMED", resumed)
	// A heartbeat on each connection (the first one goes out at HELLO).
	deadline := time.After(patience)
	for rec.count(1) < 2 {
		select {
		case <-rec.wrote:
		case <-deadline:
			t.Fatalf("fewer than 2 heartbeats within %v", patience)
		}
	}

	prefixes := map[int][]byte{1: heartbeatPrefix, 2: identifyPrefix, 6: resumePrefix}
	seen := map[int]int{}
	for i, msg := range rec.messages(t) {
		if msg.opcode != websocket.TextMessage {
			continue // the close frame of the first connection
		}
		var p struct {
			Op *int `json:"op"`
		}
		// Never the payload itself in a message: IDENTIFY and RESUME carry
		// the token.
		if err := json.Unmarshal(msg.payload, &p); err != nil || p.Op == nil {
			t.Errorf("message %d (%d bytes) is not a JSON payload with an op: %v", i, len(msg.payload), err)
			continue
		}
		want, gated := prefixes[*p.Op]
		if !gated {
			continue
		}
		seen[*p.Op]++
		if !bytes.HasPrefix(msg.payload, want) {
			t.Errorf("op %d payload starts with field %q; the gate looks for %s", *p.Op, firstKey(msg.payload), want)
		}
	}
	for op := range prefixes {
		if seen[op] == 0 {
			t.Errorf("discordgo wrote no op %d payload that the gate would have seen: %v", op, seen)
		}
	}
}

// firstKey is the name of a JSON object's first field.
func firstKey(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "(not an object)"
	}
	k, _ := dec.Token()
	s, _ := k.(string)
	return s
}

// recordingDialer dials TCP and records every byte written on each
// connection.
type recordingDialer struct {
	mu    sync.Mutex
	conns []*recordingConn
	wrote chan struct{} // a write happened
}

func (d *recordingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c, d: d}
	d.mu.Lock()
	d.conns = append(d.conns, rc)
	d.mu.Unlock()
	return rc, nil
}

type recordingConn struct {
	net.Conn
	d   *recordingDialer
	out []byte // under d.mu
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.d.mu.Lock()
	c.out = append(c.out, p...)
	c.d.mu.Unlock()
	select {
	case c.d.wrote <- struct{}{}:
	default:
	}
	return c.Conn.Write(p)
}

type wsMessage struct {
	opcode  int
	payload []byte
}

// messages splits what was written on every connection into websocket
// messages (RFC 6455 section 5), after each HTTP upgrade request.
func (d *recordingDialer) messages(t *testing.T) []wsMessage {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []wsMessage
	for i, c := range d.conns {
		msgs, err := splitMessages(c.out)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		out = append(out, msgs...)
	}
	return out
}

// count is the number of text messages whose JSON op is op.
func (d *recordingDialer) count(op int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.conns {
		msgs, _ := splitMessages(c.out) // a message being written is left out
		for _, m := range msgs {
			var p struct{ Op int }
			if m.opcode == websocket.TextMessage && json.Unmarshal(m.payload, &p) == nil && p.Op == op {
				n++
			}
		}
	}
	return n
}

// splitMessages parses a client's byte stream: the upgrade request, then
// masked frames, continuations joined to their message. A frame not yet
// complete at the end is left out.
func splitMessages(b []byte) ([]wsMessage, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, nil
	}
	b = b[end+4:]
	var out []wsMessage
	var cur *wsMessage
	for len(b) >= 2 {
		fin, opcode := b[0]&0x80 != 0, int(b[0]&0x0f)
		masked, n := b[1]&0x80 != 0, uint64(b[1]&0x7f)
		h := 2
		switch n {
		case 126:
			if len(b) < 4 {
				return out, nil
			}
			n, h = uint64(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			if len(b) < 10 {
				return out, nil
			}
			n, h = binary.BigEndian.Uint64(b[2:10]), 10
		}
		var key []byte
		if masked {
			if len(b) < h+4 {
				return out, nil
			}
			key, h = b[h:h+4], h+4
		}
		if uint64(len(b)-h) < n {
			return out, nil
		}
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = b[h+i]
			if masked {
				payload[i] ^= key[i%4]
			}
		}
		b = b[h+int(n):]
		switch {
		case opcode == opContinuation && cur != nil:
			cur.payload = append(cur.payload, payload...)
		case opcode >= opClose: // control frames may come between fragments
			out = append(out, wsMessage{opcode, payload})
			continue
		default:
			cur = &wsMessage{opcode, payload}
		}
		if fin {
			out = append(out, *cur)
			cur = nil
		}
	}
	return out, nil
}
