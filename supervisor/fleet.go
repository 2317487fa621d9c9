package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// Fleet call bounds. A caller waits for at most fleetSlots answers at a
// time (a broadcast takes one per cluster of the plan, an Ask one), and a
// cluster has at most fleetSlots requests to answer: past either, calls get
// "busy" at once. Both bound what the channel's writer can have queued for
// one cluster, so that neither a flooding caller nor a slow target fills
// it, and the writer, one per cluster, never waits on another cluster.
const (
	fleetSlots = 512
	// fleetQueue is the room the out queue keeps for fleet messages.
	fleetQueue = 2 * fleetSlots
)

// fleetRouter routes the fleet calls of every cluster this supervisor runs.
type fleetRouter struct {
	sup     *Supervisor
	routes  atomic.Pointer[fleetRoutes] // the live fleet's; replaced at a reshard's switch
	seq     atomic.Uint64               // request ids sent to clusters
	metrics *fleetMetrics
	self    fleetSlotsCount // the supervisor's own calls (HTTP)
	client  *http.Client    // to the peers, unless Peers.Client
}

func newFleetRouter(s *Supervisor) *fleetRouter {
	r := &fleetRouter{sup: s, metrics: newFleetMetrics(),
		// Many calls in flight to each peer: keep that many connections.
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: fleetSlots / 8, IdleConnTimeout: time.Minute}}}
	r.setRoster(s.live())
	return r
}

// fleetRoutes is where a fleet's calls go: its plan, and its clusters.
type fleetRoutes struct {
	plan    Plan
	owner   map[int]int     // shard id → cluster id, for the local clusters
	runners map[int]*runner // by cluster id
}

// setRoster routes calls to ro's clusters from now on.
func (r *fleetRouter) setRoster(ro *roster) {
	rt := &fleetRoutes{plan: ro.plan, owner: map[int]int{}, runners: map[int]*runner{}}
	for _, rn := range ro.runners {
		rt.runners[rn.cluster.ID] = rn
		for _, id := range rn.cluster.Shards {
			rt.owner[id] = rn.cluster.ID
		}
	}
	r.routes.Store(rt)
}

// fleetSlotsCount counts the answers one caller waits for.
type fleetSlotsCount struct{ waiting atomic.Int64 }

// take reserves n slots, or reports that the caller has too many in flight.
func (c *fleetSlotsCount) take(n int) bool {
	if c.waiting.Add(int64(n)) > fleetSlots {
		c.waiting.Add(-int64(n))
		return false
	}
	return true
}

// chanFleet is a channel's part in fleet calls.
type chanFleet struct {
	router  *fleetRouter
	slots   fleetSlotsCount // answers this cluster, as a caller, waits for
	ready   atomic.Bool     // the process has been ready: it takes requests
	retired atomic.Bool     // the process was asked to stop

	mu      sync.Mutex
	pending map[uint64]*fleetPart // requests sent to the cluster, by id
	gone    bool
}

// fleetCall is one call in flight: its parts are the clusters it reaches.
type fleetCall struct {
	router *fleetRouter
	name   string
	id     uint64 // the caller's
	of     int
	start  time.Time
	answer func(*wire.FleetAnswer) // to the caller; must not block
	slots  *fleetSlotsCount

	mu    sync.Mutex
	left  int
	timer *time.Timer
	parts []*fleetPart
}

// fleetPart is one cluster's part of a call.
type fleetPart struct {
	call    *fleetCall
	cluster int
	target  *channel // nil when answered at once
	key     uint64   // the request's id at the target
	done    atomic.Bool
}

// deliver answers the part with an error.
func (p *fleetPart) deliver(code wire.FleetCode, msg string) { p.deliverAs(p.cluster, code, msg, nil) }

// deliverData answers the part with data, once: whoever first delivers wins.
func (p *fleetPart) deliverData(code wire.FleetCode, msg string, data json.RawMessage) {
	p.deliverAs(p.cluster, code, msg, data)
}

// deliverAs answers for cluster (a forwarded guild's part learns its
// cluster from the peer that answers).
func (p *fleetPart) deliverAs(cluster int, code wire.FleetCode, msg string, data json.RawMessage) {
	if !p.done.CompareAndSwap(false, true) {
		return
	}
	c := p.call
	c.router.metrics.answered(c.name, code)
	c.answer(&wire.FleetAnswer{ID: c.id, Cluster: cluster, Of: c.of, Code: code, Error: msg, Data: data})
	c.slots.waiting.Add(-1)
	c.mu.Lock()
	c.left--
	last := c.left == 0
	if last && c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	if last {
		c.router.metrics.finished(c.name, time.Since(c.start))
	}
}

// expire answers every part still open with "deadline".
func (c *fleetCall) expire() {
	c.mu.Lock()
	parts := c.parts
	c.mu.Unlock()
	for _, p := range parts {
		if p.done.Load() {
			continue
		}
		if p.target != nil {
			p.target.fleet.take(p.key)
		}
		p.deliver(wire.FleetDeadline, fmt.Sprintf("cluster %d did not answer within %v", p.cluster, time.Since(c.start).Round(time.Millisecond)))
	}
}

// take removes a pending request and returns it, or nil.
func (f *chanFleet) take(key uint64) *fleetPart {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pending[key]
	delete(f.pending, key)
	return p
}

// call routes m for a caller: answer receives every answer (the call's
// parts, or one refusal), never blocking; slots bounds what the caller may
// have in flight. With forward, parts for clusters this supervisor does
// not run go to its peers (if it has any).
func (r *fleetRouter) call(m *wire.FleetCall, slots *fleetSlotsCount, answer func(*wire.FleetAnswer), forward bool) {
	forward = forward && r.sup.cfg.Peers != nil
	rt := r.routes.Load()
	refuse := func(code wire.FleetCode, msg string) {
		r.metrics.answered(m.Name, code)
		answer(&wire.FleetAnswer{ID: m.ID, Cluster: -1, Code: code, Error: msg})
	}
	var targets []int
	switch m.To {
	case wire.ToAll:
		for id := range rt.plan.Total {
			targets = append(targets, id)
		}
	case wire.ToCluster:
		if m.Cluster >= rt.plan.Total {
			refuse(wire.FleetBadRequest, fmt.Sprintf("no cluster %d: the plan has clusters 0-%d", m.Cluster, rt.plan.Total-1))
			return
		}
		targets = []int{m.Cluster}
	case wire.ToGuild:
		shard := int((m.Guild >> 22) % uint64(rt.plan.ShardCount))
		id, ok := rt.owner[shard]
		switch {
		case ok:
			targets = []int{id}
		case forward:
			targets = []int{-1} // its cluster is the peer's to say
		default:
			refuse(wire.FleetUnavailable, fmt.Sprintf("guild %d is on shard %d, which another supervisor runs", m.Guild, shard))
			return
		}
	}
	if len(targets) > fleetSlots {
		refuse(wire.FleetBadRequest, fmt.Sprintf("a broadcast to %d clusters exceeds the limit of %d", len(targets), fleetSlots))
		return
	}
	if !slots.take(len(targets)) {
		refuse(wire.FleetBusy, fmt.Sprintf("the caller waits for %d answers already (limit %d)", slots.waiting.Load(), fleetSlots))
		return
	}
	c := &fleetCall{router: r, name: m.Name, id: m.ID, of: len(targets), start: time.Now(), answer: answer, slots: slots, left: len(targets)}
	r.metrics.inFlight.Inc()
	// Parts are made first, then sent: an answer may come back (on the
	// target's reader) before the last is sent.
	for _, id := range targets {
		c.parts = append(c.parts, &fleetPart{call: c, cluster: id})
	}
	var remote []*fleetPart
	for _, p := range c.parts {
		if forward && rt.runners[p.cluster] == nil {
			remote = append(remote, p)
			continue
		}
		r.send(rt, p, m)
	}
	c.mu.Lock()
	if c.left > 0 {
		c.timer = time.AfterFunc(m.Timeout-time.Since(c.start), c.expire)
	}
	c.mu.Unlock()
	if len(remote) > 0 {
		guild := uint64(0)
		if m.To == wire.ToGuild {
			guild = m.Guild
		}
		go r.forward(c, remote, m, guild)
	}
}

// send hands one part to its cluster, or answers it at once when the
// cluster cannot take it.
func (r *fleetRouter) send(rt *fleetRoutes, p *fleetPart, m *wire.FleetCall) {
	rn := rt.runners[p.cluster]
	if rn == nil {
		p.deliver(wire.FleetUnavailable, fmt.Sprintf("cluster %d runs on another supervisor", p.cluster))
		return
	}
	ch := rn.channel()
	if ch == nil {
		st, _ := r.sup.store.clusterIn(rn.ro.set, p.cluster)
		p.deliver(wire.FleetUnavailable, fmt.Sprintf("cluster %d is not running (%s)", p.cluster, st.State))
		return
	}
	if why := ch.fleet.unavailable(); why != "" {
		p.deliver(wire.FleetUnavailable, fmt.Sprintf("cluster %d is %s", p.cluster, why))
		return
	}
	key := r.seq.Add(1)
	f := &ch.fleet
	f.mu.Lock()
	switch {
	case f.gone:
		f.mu.Unlock()
		p.deliver(wire.FleetUnavailable, fmt.Sprintf("cluster %d: its process is gone", p.cluster))
		return
	case len(f.pending) >= fleetSlots:
		f.mu.Unlock()
		p.deliver(wire.FleetBusy, fmt.Sprintf("cluster %d has %d requests to answer already (limit %d)", p.cluster, fleetSlots, fleetSlots))
		return
	}
	if f.pending == nil {
		f.pending = map[uint64]*fleetPart{}
	}
	p.target, p.key = ch, key
	f.pending[key] = p
	f.mu.Unlock()
	left := m.Timeout - time.Since(p.call.start)
	if left <= 0 {
		return // expire answers it
	}
	if !ch.trySend(&wire.FleetRequest{ID: key, Name: m.Name, Timeout: left, Data: m.Data}) && ch.fleet.take(key) != nil {
		if ch.ctx.Err() != nil {
			p.deliver(wire.FleetUnavailable, fmt.Sprintf("cluster %d: its process is gone", p.cluster))
		} else {
			p.deliver(wire.FleetBusy, fmt.Sprintf("cluster %d is behind in reading its channel", p.cluster))
		}
	}
}

// trySend queues a fleet request unless the cluster is behind in reading
// its channel: requests whose calls expired may still be queued, and a
// caller must not get the target cut off for not reading (send's rule)
// by keeping its queue full of them. What else is queued has room left.
func (ch *channel) trySend(m wire.Message) bool {
	if len(ch.out) >= fleetSlots {
		return false
	}
	select {
	case ch.out <- m:
		return true
	case <-ch.ctx.Done():
		return false
	default:
		return false
	}
}

// unavailable says why the channel's cluster takes no requests, or "".
func (f *chanFleet) unavailable() string {
	switch {
	case f.retired.Load():
		return "stopping"
	case !f.ready.Load():
		return "starting, not ready yet"
	}
	return ""
}

// fleetCall is a caller's call, read from its channel.
func (ch *channel) fleetCall(m *wire.FleetCall) error {
	if err := ch.checkHello(m); err != nil {
		return err
	}
	if ch.fleet.router == nil {
		return errors.New("fleet call to a supervisor that routes none")
	}
	ch.fleet.router.call(m, &ch.fleet.slots, func(a *wire.FleetAnswer) { ch.send(a) }, true)
	return nil
}

// fleetReply is a target's answer, read from its channel.
func (ch *channel) fleetReply(m *wire.FleetReply) error {
	if err := ch.checkHello(m); err != nil {
		return err
	}
	if r := ch.fleet.router; r == nil || m.ID > r.seq.Load() {
		return fmt.Errorf("fleet reply to request %d, never sent", m.ID)
	}
	p := ch.fleet.take(m.ID)
	if p == nil || p.target != ch {
		return nil // late: the call's deadline answered it already
	}
	if m.Code == wire.FleetOK {
		p.call.router.metrics.known(p.call.name)
	}
	p.deliverData(m.Code, m.Error, m.Data)
	return nil
}

func (ch *channel) checkHello(m wire.Message) error {
	select {
	case <-ch.helloed:
		return nil
	default:
		return fmt.Errorf("%s before hello", m.Type())
	}
}

// noteReady records that the cluster has been ready in this process: from
// then on it takes fleet requests, even while a shard reconnects.
func (ch *channel) noteReady() {
	if ch.fleet.ready.Load() {
		return
	}
	if c, _ := ch.store.clusterIn(ch.set, ch.cluster.ID); c.Ready() {
		ch.fleet.ready.Store(true)
	}
}

// retire stops routing requests to the process: it was asked to stop.
func (ch *channel) retire() { ch.fleet.retired.Store(true) }

// failFleet answers every request the process still had with
// "unavailable": it is gone. Called once its channel's context ends.
func (ch *channel) failFleet() {
	f := &ch.fleet
	f.mu.Lock()
	f.gone = true
	pending := f.pending
	f.pending = nil
	f.mu.Unlock()
	for _, p := range pending {
		p.deliver(wire.FleetUnavailable, fmt.Sprintf("cluster %d: its process exited before answering", p.cluster))
	}
}

// FleetCall routes a call of the supervisor's own (the HTTP API's) and
// waits for its answers, sorted by cluster. A refused call is one answer
// with Cluster -1.
func (s *Supervisor) FleetCall(ctx context.Context, name, to string, cluster int, guild uint64, data json.RawMessage) ([]*wire.FleetAnswer, error) {
	return s.fleetCall(ctx, &wire.FleetCall{Name: name, To: to, Cluster: cluster, Guild: guild, Data: data}, true)
}

func (s *Supervisor) fleetCall(ctx context.Context, m *wire.FleetCall, forward bool) ([]*wire.FleetAnswer, error) {
	name := m.Name
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	m.ID, m.Timeout = 1, min(timeout, wire.MaxFleetTimeout)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("fleet call: %w", err)
	}
	var mu sync.Mutex
	var out []*wire.FleetAnswer
	done := make(chan struct{})
	s.fleet.call(m, &s.fleet.self, func(a *wire.FleetAnswer) {
		mu.Lock()
		defer mu.Unlock()
		out = append(out, a)
		if (a.Cluster < 0 && a.Of == 0) || len(out) == a.Of {
			close(done)
		}
	}, forward)
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("fleet call %q: %w", name, context.Cause(ctx))
	}
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(out, func(a, b *wire.FleetAnswer) int { return a.Cluster - b.Cluster })
	return out, nil
}
