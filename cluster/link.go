package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// ErrSupervisorGone is returned by Link.Run when the supervisor's end of the
// channel closed: the supervisor exited or was killed.
var ErrSupervisorGone = errors.New("supervisor gone: its end of the channel closed")

// Link is a cluster process's end of its channel to the supervisor. It is
// the cluster's identify queue (identify.Acquirer) and its Reporter, and it
// answers the supervisor's metrics requests.
type Link struct {
	conn    *wire.Conn
	nc      net.Conn
	log     *slog.Logger
	welcome *wire.Welcome
	gather  prometheus.Gatherer

	seq  atomic.Uint64
	done chan struct{} // closed when the channel is gone

	mu      sync.Mutex
	waiters map[uint64]*grantWaiter
	wg      sync.WaitGroup

	fleet linkFleet // fleet calls made and served (linkfleet.go)
	rest  linkREST  // REST tickets (resttickets.go)
	// Set by the cluster before Run (attach).
	party handoffParty
	inbox *handoffInbox // nil unless the welcome said Handoff
}

// handoffParty is the cluster, as the link sees it during a handoff and
// at the end of its shadow.
type handoffParty interface {
	handOver()
	thawAll(reason string)
	goLive()
}

// attach tells the link whom to ask for a handoff and where what is handed
// over goes; call it before Run.
func (l *Link) attach(p handoffParty, in *handoffInbox) {
	l.party, l.inbox = p, in
}

type grantWaiter struct {
	grant chan time.Time // when the IDENTIFY may go
	gone  bool
}

// Connect opens the channel the supervisor passed at descriptor fd, waits up
// to timeout for its welcome (which holds the token), and says hello.
func Connect(fd uintptr, hello *wire.Hello, timeout time.Duration, logger *slog.Logger) (*Link, error) {
	nc, err := wire.FileConn(fd)
	if err != nil {
		return nil, err
	}
	l := &Link{conn: wire.NewConn(nc, 10*time.Second), nc: nc, log: logger,
		done: make(chan struct{}), waiters: map[uint64]*grantWaiter{}}
	l.rest.init()
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	m, err := l.conn.Read()
	_ = nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read welcome from supervisor: %w", err)
	}
	w, ok := m.(*wire.Welcome)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("read welcome from supervisor: got %s", m.Type())
	}
	l.welcome = w
	if err := l.conn.Write(hello); err != nil {
		nc.Close()
		return nil, fmt.Errorf("say hello to supervisor: %w", err)
	}
	return l, nil
}

// Welcome is what the supervisor said first.
func (l *Link) Welcome() *wire.Welcome { return l.welcome }

// SetGatherer sets what answers metrics requests; call it before Run.
func (l *Link) SetGatherer(g prometheus.Gatherer) { l.gather = g }

// Run reads the supervisor's messages until ctx is done (nil) or the channel
// closes (ErrSupervisorGone).
func (l *Link) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.nc.Close() })
	defer stop()
	defer l.wg.Wait()
	defer close(l.done)
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.writeREST() }()
	for {
		m, err := l.conn.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return ErrSupervisorGone
			}
			return fmt.Errorf("read from supervisor: %w", err)
		}
		switch m := m.(type) {
		case *wire.IdentifyGrant:
			l.granted(m)
		case *wire.RESTGrant:
			l.restGranted(m)
		case *wire.MetricsRequest:
			l.wg.Add(1)
			go func() { defer l.wg.Done(); l.answerMetrics(m.ID) }()
		case *wire.FleetRequest:
			l.wg.Add(1)
			go func() { defer l.wg.Done(); l.serveFleet(ctx, m) }()
		case *wire.FleetAnswer:
			l.fleetAnswered(m)
		case *wire.HandoffRequest:
			if l.party == nil {
				l.send(&wire.HandoffEnd{Reason: "no cluster to hand over"})
				continue
			}
			l.wg.Add(1)
			go func() { defer l.wg.Done(); l.party.handOver() }()
		case *wire.HandoffAbort:
			if l.party != nil {
				l.wg.Add(1)
				go func() { defer l.wg.Done(); l.party.thawAll(m.Reason) }()
			}
		case *wire.HandoffShard:
			if l.inbox == nil {
				return fmt.Errorf("read from supervisor: %w: a handoff nobody announced", wire.ErrProtocol)
			}
			if err := l.inbox.add(m); err != nil {
				return fmt.Errorf("read from supervisor: %w: %w", wire.ErrProtocol, err)
			}
		case *wire.Live:
			if l.party == nil {
				l.log.Debug("live, with no cluster attached; ignored")
				continue
			}
			l.party.goLive()
		case *wire.HandoffEnd:
			if l.inbox != nil {
				if m.Reason != "" {
					l.log.Warn("handoff: the old process handed nothing over; identifying", "reason", m.Reason)
				}
				l.inbox.end()
			}
		default:
			l.log.Warn("unexpected message from supervisor", "type", m.Type().String())
		}
	}
}

func (l *Link) granted(g *wire.IdentifyGrant) {
	l.mu.Lock()
	w, ok := l.waiters[g.Seq]
	delete(l.waiters, g.Seq)
	l.mu.Unlock()
	switch {
	case !ok:
		l.log.Warn("identify grant nobody asked for", "shard_id", g.Shard, "seq", g.Seq)
	case w.gone: // its Acquire gave up meanwhile: give the turn back
		l.send(&wire.IdentifyDone{Shard: g.Shard, Seq: g.Seq, Sent: false})
	default:
		nb := time.Now().Add(g.Delay)
		if g.NotBefore != 0 {
			nb = wire.MonoTime(g.NotBefore) // without the channel's latency
		}
		w.grant <- nb
	}
}

// Acquire implements identify.Acquirer through the supervisor's queue.
func (l *Link) Acquire(ctx context.Context, shard int) (identify.Lease, error) {
	seq := l.seq.Add(1)
	w := &grantWaiter{grant: make(chan time.Time, 1)}
	l.mu.Lock()
	l.waiters[seq] = w
	l.mu.Unlock()
	if err := l.conn.Write(&wire.IdentifyRequest{Shard: shard, Seq: seq}); err != nil {
		l.mu.Lock()
		delete(l.waiters, seq)
		l.mu.Unlock()
		return nil, fmt.Errorf("ask supervisor for identify: %w", err)
	}
	select {
	case nb := <-w.grant:
		return &linkLease{l: l, shard: shard, seq: seq, notBefore: nb}, nil
	case <-ctx.Done():
	case <-l.done:
	}
	l.mu.Lock()
	w.gone = true
	l.mu.Unlock()
	select {
	case <-w.grant: // granted just now: give it back
		l.send(&wire.IdentifyDone{Shard: shard, Seq: seq, Sent: false})
	default:
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, ErrSupervisorGone
}

type linkLease struct {
	l         *Link
	shard     int
	seq       uint64
	notBefore time.Time
	done      atomic.Bool
}

func (g *linkLease) NotBefore() time.Time { return g.notBefore }
func (g *linkLease) Sent()                { g.SentAt(time.Now()) }
func (g *linkLease) Cancel()              { g.finish(false, 0) }

// SentAt reports the send at t, as a reading of the clock both processes
// share.
func (g *linkLease) SentAt(t time.Time) { g.finish(true, wire.Mono()-int64(time.Since(t))) }

// finish reports the grant's end, with the moment the IDENTIFY left on the
// clock both processes share.
func (g *linkLease) finish(sent bool, at int64) {
	if g.done.CompareAndSwap(false, true) {
		g.l.send(&wire.IdentifyDone{Shard: g.shard, Seq: g.seq, Sent: sent, SentAt: at})
	}
}

// send writes m; a failure means the supervisor is gone, which Run reports.
func (l *Link) send(m wire.Message) {
	if err := l.conn.Write(m); err != nil {
		l.log.Debug("write to supervisor", "type", m.Type().String(), "err", err)
	}
}

// Status implements Reporter.
func (l *Link) Status(st *wire.Status) { l.send(st) }

// Fatal implements Reporter.
func (l *Link) Fatal(f *wire.Fatal) { l.send(f) }

func (l *Link) answerMetrics(id uint64) {
	var buf bytes.Buffer
	if l.gather != nil {
		mfs, err := l.gather.Gather()
		if err != nil {
			l.log.Warn("gather metrics", "err", err)
		}
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				l.log.Warn("encode metrics", "err", err)
				break
			}
		}
	}
	if buf.Len() > wire.MaxMetrics-8 {
		l.log.Error("metrics larger than the channel allows; sending none", "bytes", buf.Len())
		buf.Reset()
	}
	l.send(&wire.Metrics{ID: id, Data: buf.Bytes()})
}
