package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/internal/identify"
)

// The gate is how shardvisor paces every IDENTIFY discordgo sends, whatever
// the path: discordgo v0.29.0 identifies from Open(), and again inline, on
// the same socket and at once, when it gets op 9 INVALID_SESSION; it has no
// hook for either. Every gateway connection of a shard is dialled through
// the gate, which follows the frames the client writes and holds a text
// frame that starts an IDENTIFY until the shard has an identify lease and
// its time has come, then reports it sent. It also reads the close code of
// the server's close frame, which discordgo drops.
//
// Discord's JSON for these payloads starts with the op field, exactly as
// discordgo's structs marshal it; TestDiscordgoPayloadsStartWithOp
// (gate_test.go) fails if that changes.
var (
	heartbeatPrefix = []byte(`{"op":1,`)
	identifyPrefix  = []byte(`{"op":2,`)
	resumePrefix    = []byte(`{"op":6,`)
)

// errGateClosed is returned by a held write when the connection or the
// shard ends first.
var errGateClosed = errors.New("gateway connection closed while waiting for an identify grant")

// errFrozen is returned by every write on a frozen connection: discordgo's
// close 1000 (which would end the session at Discord) never leaves.
var errFrozen = errors.New("gateway connection frozen for a handoff")

// gateHooks is what the gate needs from its shard.
type gateHooks interface {
	// takeLease returns the lease acquired before Open, if any.
	takeLease() identify.Lease
	// acquire waits for a lease (op 9 path); the shard shows "queued".
	acquire(ctx context.Context) (identify.Lease, error)
	// identifySent, resumeSent and heartbeatSent are called once the
	// frame is written. (discordgo writes LastHeartbeatSent under a lock of
	// its own that nobody outside can take: the gate's time is race-free.)
	identifySent(reidentify bool, at time.Time)
	resumeSent()
	heartbeatSent(at time.Time)
	// invalidSessionWait is the pause Discord asks for before identifying
	// again after op 9.
	invalidSessionWait() time.Duration
}

// gatedConn is one gateway connection of one shard.
type gatedConn struct {
	net.Conn
	hooks gateHooks
	ctx   context.Context
	stop  context.CancelFunc

	wmu        sync.Mutex // gorilla writes from one goroutine at a time; this keeps w consistent anyway
	w          frameScanner
	identified bool // an IDENTIFY or RESUME went out on this connection

	rmu        sync.Mutex
	r          frameScanner
	closeCode  int  // from the server's close frame; 0 if none yet
	frozen     bool // freeze was called
	readFailed bool // a Read returned an error
	drained    chan struct{}
}

func newGatedConn(ctx context.Context, c net.Conn, hooks gateHooks) *gatedConn {
	ctx, stop := context.WithCancel(ctx)
	g := &gatedConn{Conn: c, hooks: hooks, ctx: ctx, stop: stop, drained: make(chan struct{})}
	g.w.handshake, g.r.handshake = true, true // the HTTP upgrade comes first
	return g
}

// Write holds an IDENTIFY until it may go.
func (g *gatedConn) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.isFrozen() {
		return 0, errFrozen
	}
	const (
		other = iota
		identifyFrame
		resumeFrame
		heartbeatFrame
	)
	kind := other
	for _, f := range g.w.scan(p) {
		if f.opcode != opText {
			continue
		}
		switch {
		case bytes.HasPrefix(identifyPrefix, f.prefix) && !f.complete, bytes.HasPrefix(f.prefix, identifyPrefix):
			kind = identifyFrame
		case bytes.HasPrefix(f.prefix, resumePrefix):
			kind = resumeFrame
		case bytes.HasPrefix(f.prefix, heartbeatPrefix):
			kind = heartbeatFrame
		}
	}
	if kind != identifyFrame {
		n, err := g.Conn.Write(p)
		switch {
		case err != nil:
		case kind == resumeFrame:
			g.identified = true
			g.hooks.resumeSent()
		case kind == heartbeatFrame:
			g.hooks.heartbeatSent(time.Now())
		}
		return n, err
	}
	reidentify := g.identified
	l, err := g.waitForTurn(reidentify)
	if err != nil {
		return 0, err
	}
	n, err := g.Conn.Write(p)
	if err != nil {
		l.Cancel() // it did not reach Discord
		return n, err
	}
	at := time.Now() // taken at once: reporting the send may itself take a while
	l.SentAt(at)
	g.identified = true
	g.hooks.identifySent(reidentify, at)
	return n, nil
}

// waitForTurn returns a lease whose NotBefore has passed. An IDENTIFY after
// another IDENTIFY or RESUME on the same connection is discordgo's answer to
// op 9: it waits the 1-5 s Discord asks for as well.
func (g *gatedConn) waitForTurn(reidentify bool) (identify.Lease, error) {
	var earliest time.Time
	if reidentify {
		earliest = time.Now().Add(g.hooks.invalidSessionWait())
	}
	l := g.hooks.takeLease()
	if l == nil {
		var err error
		if l, err = g.hooks.acquire(g.ctx); err != nil {
			return nil, errGateClosed
		}
	}
	if nb := l.NotBefore(); nb.After(earliest) {
		earliest = nb
	}
	if d := time.Until(earliest); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-g.ctx.Done():
			l.Cancel()
			return nil, errGateClosed
		}
	}
	return l, nil
}

// Read passes data through and notes a close frame's code.
func (g *gatedConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if n > 0 || err != nil {
		g.rmu.Lock()
		for _, f := range g.r.scan(p[:n]) {
			if f.opcode == opClose && f.complete && len(f.prefix) >= 2 {
				g.closeCode = int(binary.BigEndian.Uint16(f.prefix))
			}
		}
		if err != nil {
			g.readFailed = true
			if g.frozen {
				g.markDrained()
			}
		}
		g.rmu.Unlock()
	}
	return n, err
}

func (g *gatedConn) isFrozen() bool {
	g.rmu.Lock()
	defer g.rmu.Unlock()
	return g.frozen
}

// markDrained closes drained once; rmu is held.
func (g *gatedConn) markDrained() {
	select {
	case <-g.drained:
	default:
		close(g.drained)
	}
}

// freeze ends the connection without a word to Discord, so that its
// session stays resumable: from now on every write fails (discordgo's close
// 1000 included) and the socket is closed under discordgo's reader. The
// returned channel is closed once the reader is done: its Read failed after
// the freeze (frames it had buffered are dispatched first), or had already
// failed. From then on discordgo dispatches nothing more on this
// connection: its sequence number and State are final.
func (g *gatedConn) freeze() <-chan struct{} {
	g.rmu.Lock()
	g.frozen = true
	if g.readFailed {
		g.markDrained()
	}
	g.rmu.Unlock()
	g.stop() // a held IDENTIFY gives up
	_ = g.Conn.Close()
	return g.drained
}

// CloseCode is the code of the server's close frame, or 0.
func (g *gatedConn) CloseCode() int {
	g.rmu.Lock()
	defer g.rmu.Unlock()
	return g.closeCode
}

// Close releases a held write and closes the connection.
func (g *gatedConn) Close() error {
	g.stop()
	return g.Conn.Close()
}

// Closed reports whether Close was called.
func (g *gatedConn) Closed() bool { return g.ctx.Err() != nil }

// dialer returns a websocket dialer whose connections go through the gate.
// It dials TLS itself for wss:// (so that the gate sees frames, not
// ciphertext); HTTP proxies are not supported for the gateway.
// onConn may refuse a connection (a frozen shard): the dial fails with
// its error.
func dialer(ctx context.Context, hooks gateHooks, onConn func(*gatedConn) error) *websocket.Dialer {
	var nd net.Dialer
	wrap := func(c net.Conn) (net.Conn, error) {
		g := newGatedConn(ctx, c, hooks)
		if err := onConn(g); err != nil {
			g.Close()
			return nil, err
		}
		return g, nil
	}
	return &websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(c)
		},
		NetDialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("dial gateway %s: %w", addr, err)
			}
			c, err := (&tls.Dialer{NetDialer: &nd, Config: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(c)
		},
	}
}

// jitter returns a random duration in [lo, hi].
func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo+1)
}
