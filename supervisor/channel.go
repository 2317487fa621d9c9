package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Channel limits: what one child may ask of the supervisor.
const (
	outQueue          = 256              // messages waiting to be written to one child
	channelWriteLimit = 10 * time.Second // a child that does not read for this long is cut off
	floodRate         = 200.0            // messages per second, sustained, plus 4 per shard
	floodBurst        = 1000.0           // plus 8 per shard
)

// errProtocol marks a child cut off for breaking the channel protocol.
var errProtocol = errors.New("channel protocol")

// channel serves one cluster process's end of the channel.
type channel struct {
	cluster Cluster
	shards  map[int]bool
	conn    *wire.Conn
	queue   identify.Acquirer
	store   *Store
	set     *statusSet // the cluster's fleet in store
	// shadow says the welcome started the process in shadow; liveOnce
	// sends it the one Live (reshard.go).
	shadow   bool
	liveOnce sync.Once
	log      *slog.Logger

	ctx      context.Context // done when the child is gone
	cancel   context.CancelFunc
	wg       sync.WaitGroup // reader, writer and identify waits
	readDone chan struct{}  // closed when the reader returns
	out      chan wire.Message
	// broken receives the first protocol violation; the runner then kills
	// the child.
	broken chan error

	heard atomic.Int64 // unix nanoseconds of the last message

	// The handoff (handoff.go).
	helloed   chan struct{} // closed at the child's hello
	allReady  chan struct{} // closed at the first status with every shard ready
	hold      chan struct{} // non-nil: identify requests wait until it is closed
	muted     atomic.Bool   // its statuses are not stored (a handoff is under way)
	handedEnd chan *wire.HandoffEnd

	mu        sync.Mutex
	hello     *wire.Hello
	last      *wire.Status              // the last status, stored or not
	relayTo   *channel                  // where this child's handoff goes
	parkTo    *parking                  // or where it is written, at a stop (sessiondir.go)
	dropping  bool                      // a handoff was aborted: its late messages are dropped
	leases    map[uint64]identify.Lease // granted, not yet reported
	requests  int                       // identify requests waiting in the queue
	metrics   map[uint64]chan []byte
	nextID    uint64
	fatal     *wire.Fatal
	tokens    float64
	tokenTime time.Time
	rate      float64
	burst     float64

	fleet chanFleet // fleet calls made and answered (fleet.go)

	rest     *restLimits // the bot's REST limits, if the child takes tickets (rest.go)
	restOpen int         // its tickets not yet reported
	// With a remote service: who holds each unreported ticket, per key,
	// oldest first, and how many there are; restSem bounds the tickets
	// asked of the service at once.
	restFrom map[string][]*restTicketState
	restHeld int
	restSem  chan struct{}

	checkpoints bool                // the child was asked to report its sessions
	sessions    []wire.HandoffShard // its last report (crashresume.go): secret
	sessionsAt  time.Time
}

func newChannel(c Cluster, nc net.Conn, q identify.Acquirer, store *Store, logger *slog.Logger) *channel {
	ctx, cancel := context.WithCancel(context.Background())
	ch := &channel{
		cluster: c, shards: map[int]bool{}, conn: wire.NewConn(nc, channelWriteLimit),
		queue: q, store: store, set: store.liveSet(), log: logger,
		ctx: ctx, cancel: cancel,
		out:      make(chan wire.Message, outQueue+fleetQueue),
		broken:   make(chan error, 1),
		readDone: make(chan struct{}),
		helloed:  make(chan struct{}), allReady: make(chan struct{}), handedEnd: make(chan *wire.HandoffEnd, 1),
		leases: map[uint64]identify.Lease{}, metrics: map[uint64]chan []byte{},
		restSem: make(chan struct{}, restRemoteInFlight),
		rate:    floodRate + 4*float64(len(c.Shards)),
		burst:   floodBurst + 8*float64(len(c.Shards)),
	}
	ch.tokens, ch.tokenTime = ch.burst, time.Now()
	for _, id := range c.Shards {
		ch.shards[id] = true
	}
	ch.heard.Store(time.Now().UnixNano())
	return ch
}

// start sends the welcome and runs the reader and writer until close. A
// child welcomed with Handoff waits for a handoff (HandoffEnd) before it
// connects a shard, and its identify requests wait for release.
func (ch *channel) start(w *wire.Welcome) {
	if w.Handoff {
		ch.hold = make(chan struct{})
		ch.muted.Store(true)
	}
	ch.checkpoints = w.Checkpoint
	w.Fleet = true
	ch.send(w)
	context.AfterFunc(ch.ctx, ch.failFleet)
	ch.wg.Add(2)
	go func() { defer ch.wg.Done(); ch.writeLoop() }()
	go func() { defer ch.wg.Done(); ch.readLoop() }()
}

// lastHeard is when the child last said anything.
func (ch *channel) lastHeard() time.Time { return time.Unix(0, ch.heard.Load()) }

// fatalReport is the child's fatal-close report, if it sent one.
func (ch *channel) fatalReport() *wire.Fatal {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.fatal
}

// violate records a protocol violation (the first one wins) and stops
// reading from the child.
func (ch *channel) violate(err error) {
	select {
	case ch.broken <- fmt.Errorf("%w: %w", errProtocol, err):
	default:
	}
	ch.cancel()
}

// send queues m for the child without blocking. A child so far behind that
// its queue is full is cut off.
func (ch *channel) send(m wire.Message) {
	select {
	case ch.out <- m:
	case <-ch.ctx.Done():
	default:
		ch.violate(fmt.Errorf("child does not read its channel: %d messages queued", outQueue))
	}
}

func (ch *channel) writeLoop() {
	for {
		select {
		case <-ch.ctx.Done():
			return
		case m := <-ch.out:
			if err := ch.conn.Write(m); err != nil {
				if ch.ctx.Err() == nil {
					ch.violate(fmt.Errorf("write to child: %w", err))
				}
				return
			}
		}
	}
}

func (ch *channel) readLoop() {
	defer close(ch.readDone)
	defer ch.cancel()
	for {
		m, err := ch.conn.Read()
		if err != nil {
			switch {
			case ch.ctx.Err() != nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				// The child exited or was cut off: its exit tells the rest.
			case errors.Is(err, wire.ErrProtocol), errors.Is(err, io.ErrUnexpectedEOF):
				ch.violate(err)
			default:
				ch.log.Debug("read from child", "err", err)
			}
			return
		}
		ch.heard.Store(time.Now().UnixNano())
		if err := ch.handle(m); err != nil {
			ch.violate(err)
			return
		}
	}
}

// allow takes one token from the flood bucket.
func (ch *channel) allow(now time.Time) bool {
	ch.tokens = min(ch.burst, ch.tokens+now.Sub(ch.tokenTime).Seconds()*ch.rate)
	ch.tokenTime = now
	if ch.tokens < 1 {
		return false
	}
	ch.tokens--
	return true
}

func (ch *channel) handle(m wire.Message) error {
	// Fleet calls are bounded by the calls in flight, not by the flood
	// limit: a busy bot makes thousands a second.
	switch m := m.(type) {
	case *wire.FleetCall:
		return ch.fleetCall(m)
	case *wire.FleetReply:
		return ch.fleetReply(m)
	}
	now := time.Now()
	// REST tickets too, by those in flight (rest.go).
	switch m := m.(type) {
	case *wire.RESTTicket:
		if ch.rest == nil {
			return fmt.Errorf("%s nobody asked for", m.Type())
		}
		return ch.restTicket(m, now)
	case *wire.RESTReport:
		if ch.rest == nil {
			return fmt.Errorf("%s nobody asked for", m.Type())
		}
		ch.restReport(m, now)
		return nil
	}
	switch m := m.(type) {
	case *wire.HandoffShard:
		return ch.relay(m)
	case *wire.HandoffEnd:
		return ch.relay(m)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.allow(now) {
		return fmt.Errorf("flood: more than %.0f messages per second", ch.rate)
	}
	if _, ok := m.(*wire.Hello); !ok && ch.hello == nil {
		return fmt.Errorf("%s before hello", m.Type())
	}
	switch m := m.(type) {
	case *wire.Hello:
		if ch.hello != nil {
			return errors.New("second hello")
		}
		if m.ClusterID != ch.cluster.ID || !slices.Equal(m.ShardIDs, ch.cluster.Shards) {
			return fmt.Errorf("hello from cluster %d with shards %v; started as cluster %d with %v",
				m.ClusterID, m.ShardIDs, ch.cluster.ID, ch.cluster.Shards)
		}
		ch.hello = m
		close(ch.helloed)
	case *wire.Status:
		ready := len(m.Shards) == len(ch.shards)
		for _, s := range m.Shards {
			if !ch.shards[s.ID] {
				return fmt.Errorf("status for shard %d, not one of this cluster's", s.ID)
			}
			ready = ready && s.State == wire.ShardReady
		}
		ch.last = m
		if ready {
			select {
			case <-ch.allReady:
			default:
				close(ch.allReady)
			}
		}
		if !ch.muted.Load() {
			ch.store.updateIn(ch.set, ch.cluster.ID, func(c *ClusterStatus) { c.setShards(m.Shards, now) })
		}
		ch.noteReady()
	case *wire.IdentifyRequest:
		if !ch.shards[m.Shard] {
			return fmt.Errorf("identify request for shard %d, not one of this cluster's", m.Shard)
		}
		if _, dup := ch.leases[m.Seq]; dup || ch.requests+len(ch.leases) >= 2*len(ch.cluster.Shards) {
			return fmt.Errorf("identify request %d: too many outstanding or duplicate", m.Seq)
		}
		ch.requests++
		ch.wg.Add(1)
		go func() { defer ch.wg.Done(); ch.acquire(m.Shard, m.Seq) }()
	case *wire.IdentifyDone:
		l, ok := ch.leases[m.Seq]
		if !ok {
			return fmt.Errorf("identify done for unknown grant %d", m.Seq)
		}
		delete(ch.leases, m.Seq)
		if m.Sent {
			ch.log.Debug("identify sent", "shard_id", m.Shard, "seq", m.Seq, "ago", time.Since(wire.MonoTime(m.SentAt)))
			l.SentAt(wire.MonoTime(m.SentAt)) // when it left, not when the report arrived
		} else {
			l.Cancel()
		}
	case *wire.Metrics:
		if w, ok := ch.metrics[m.ID]; ok {
			delete(ch.metrics, m.ID)
			w <- m.Data // buffered
		}
		// An answer nobody waits for any more (a scrape timed out) is dropped.
	case *wire.Fatal:
		ch.fatal = m
	case *wire.SessionCheckpoint:
		return ch.checkpointed(m, now)
	default:
		return fmt.Errorf("%s is not a message a child sends", m.Type())
	}
	return nil
}

// acquire waits in the identify queue on the child's behalf.
func (ch *channel) acquire(shard int, seq uint64) {
	if ch.hold != nil {
		select {
		case <-ch.hold:
		case <-ch.ctx.Done():
			ch.mu.Lock()
			ch.requests--
			ch.mu.Unlock()
			return
		}
	}
	l, err := ch.queue.Acquire(ch.ctx, shard)
	ch.mu.Lock()
	ch.requests--
	if err != nil {
		ch.mu.Unlock()
		return // the child is gone
	}
	if ch.ctx.Err() != nil {
		ch.mu.Unlock()
		l.Sent() // gone between the grant and now: assume the worst
		return
	}
	ch.leases[seq] = l
	ch.mu.Unlock()
	d := max(time.Until(l.NotBefore()), 0)
	ch.log.Debug("identify granted", "shard_id", shard, "seq", seq, "not_before_in", d)
	ch.send(&wire.IdentifyGrant{Shard: shard, Seq: seq, Delay: d, NotBefore: wire.Mono() + int64(d)})
}

// Metrics asks the child for its metrics and waits for them or ctx.
func (ch *channel) Metrics(ctx context.Context) ([]byte, error) {
	ch.mu.Lock()
	ch.nextID++
	id := ch.nextID
	w := make(chan []byte, 1)
	ch.metrics[id] = w
	ch.mu.Unlock()
	defer func() {
		ch.mu.Lock()
		delete(ch.metrics, id)
		ch.mu.Unlock()
	}()
	ch.send(&wire.MetricsRequest{ID: id})
	select {
	case b := <-w:
		return b, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("metrics of cluster %d: %w", ch.cluster.ID, context.Cause(ctx))
	case <-ch.ctx.Done():
		return nil, fmt.Errorf("metrics of cluster %d: process gone", ch.cluster.ID)
	}
}

// drainTimeout bounds how long close reads what an exited child left in
// the socket.
const drainTimeout = time.Second

// close ends the channel once the child has exited, and returns when its
// goroutines have. What the child wrote last (a fatal report, say) may
// still be in the socket: it is read first, up to EOF or drainTimeout.
// Leases it held count as sent: it may have sent the IDENTIFY just before
// it died.
func (ch *channel) close() {
	ch.conn.SetReadDeadline(time.Now().Add(drainTimeout))
	<-ch.readDone
	ch.cancel()
	ch.conn.Close()
	ch.wg.Wait()
	ch.mu.Lock()
	leases := ch.leases
	ch.leases = map[uint64]identify.Lease{}
	ch.mu.Unlock()
	for _, l := range leases {
		l.Sent()
	}
}
