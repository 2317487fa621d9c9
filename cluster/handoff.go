package cluster

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// The handoff of a rolling restart (the protocol is in internal/wire's
// handoff.go). The old process freezes every shard (freeze): the gate
// closes the socket under discordgo without a close frame, so the session
// stays resumable at Discord, and once discordgo's reader is done the
// shard's session id, last dispatched sequence number, resume URL and a
// gob snapshot of its State are sent to the supervisor. Its replacement
// restores the State and RESUMEs at the resume URL; Discord replays what
// was sent meanwhile. Should the replacement fail, the supervisor sends
// HandoffAbort and the old process thaws: its shards RESUME their own
// sessions.

// Fallback reasons, the reason label of shardvisor_handoff_fallbacks_total.
const (
	FallbackResumeRefused = "resume_refused" // the RESUME was answered op 9
	FallbackNoSession     = "no_session"     // the old process had no session for the shard
	FallbackSnapshot      = "snapshot"       // the State snapshot could not be made or restored
	FallbackUnsupported   = "unsupported"    // discordgo's session fields are not as expected
	FallbackNoUser        = "no_user"        // a crash resume could not learn the bot's user
)

// drainTimeout bounds the wait for discordgo's reader after a freeze.
const drainTimeout = 5 * time.Second

// shardHandoff is a shard's part in a handoff; guarded by shard.mu.
type shardHandoff struct {
	frozen   bool          // no connection, no close: the session may be handed over
	thawed   chan struct{} // closed by thaw; set while frozen
	restored bool          // the session came from a handoff and has not RESUMED yet
	resume   bool          // thawed: the connection's end was the freeze, not a failure
}

// handedShard is one shard as it arrived from the old process.
type handedShard struct {
	sessionID secret.Token
	seq       int64
	resumeURL string
	reason    string
	snapshot  []byte
	tooBig    bool
}

// stateSnapshot is what a shard's State carries over: READY's user,
// application and shard (handlers read s.State.User), the guilds with what
// the cache keeps, and the private channels. Cached messages are left out:
// their components are interfaces, which gob cannot carry unregistered.
type stateSnapshot struct {
	Version         int
	User            *discordgo.User
	Application     *discordgo.Application
	Shard           *[2]int
	Guilds          []*discordgo.Guild
	PrivateChannels []*discordgo.Channel
}

// handoffMetrics count the handoff's outcomes, by cause (wire's Cause
// constants: rolling_restart, crash, supervisor_restart).
type handoffMetrics struct {
	resumes   *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	bytes     prometheus.Counter
}

var handoffCauses = []string{wire.CauseRollingRestart, wire.CauseCrash, wire.CauseSupervisorRestart}

func newHandoffMetrics(reg prometheus.Registerer) *handoffMetrics {
	m := &handoffMetrics{
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_handoff_resumes_total",
			Help: "Shards handed to this process that RESUMEd, by cause (rolling_restart, crash, supervisor_restart).",
		}, []string{"cause"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_handoff_fallbacks_total",
			Help: "Shards handed to this process that identified instead of resuming, by cause and reason (resume_refused, no_session, snapshot, unsupported, no_user).",
		}, []string{"cause", "reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_handoff_snapshot_bytes_total",
			Help: "Bytes of State snapshots this process handed over.",
		}),
	}
	for _, c := range handoffCauses {
		m.resumes.WithLabelValues(c)
		for _, r := range []string{FallbackResumeRefused, FallbackNoSession, FallbackSnapshot, FallbackUnsupported, FallbackNoUser} {
			m.fallbacks.WithLabelValues(c, r)
		}
	}
	if reg != nil {
		reg.MustRegister(m.resumes, m.fallbacks, m.bytes)
	}
	return m
}

// resumeGatewayURL takes resume_gateway_url from READY's raw data.
func resumeGatewayURL(raw json.RawMessage) string {
	var r struct {
		URL string `json:"resume_gateway_url"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.URL
}

// waitThaw returns at once unless the shard is frozen; then it waits for
// thaw (true) or ctx (false).
func (sh *shard) waitThaw(ctx context.Context) bool {
	sh.mu.Lock()
	frozen, thawed := sh.handoff.frozen, sh.handoff.thawed
	sh.mu.Unlock()
	if !frozen {
		return true
	}
	select {
	case <-thawed:
		sh.mu.Lock()
		sh.handoff.resume = false // this wait was the freeze's end
		sh.mu.Unlock()
		return true
	case <-ctx.Done():
		return false
	}
}

// freeze stops the shard's connection for a handoff and returns what the
// replacement needs. A shard with no session to give gets a reason instead.
func (sh *shard) freeze(fields sessionFieldsOK, fieldsErr error) *wire.HandoffShard {
	sh.mu.Lock()
	if sh.handoff.frozen {
		sh.mu.Unlock()
		return &wire.HandoffShard{Shard: sh.id, Reason: "frozen twice"}
	}
	sh.handoff.frozen, sh.handoff.thawed = true, make(chan struct{})
	g, had := sh.conn, sh.hasSession
	sh.deadline = time.Time{}
	sh.mu.Unlock()
	if g != nil {
		select {
		case <-g.freeze():
		case <-time.After(drainTimeout):
			return &wire.HandoffShard{Shard: sh.id, Reason: "discordgo's reader did not stop"}
		}
	}
	sh.setState(wire.ShardDown)
	if fieldsErr != nil {
		return &wire.HandoffShard{Shard: sh.id, Reason: FallbackUnsupported}
	}
	if !had {
		return &wire.HandoffShard{Shard: sh.id, Reason: FallbackNoSession}
	}
	id, seq, err := fields.read(sh.s)
	if err != nil || id == "" {
		return &wire.HandoffShard{Shard: sh.id, Reason: FallbackNoSession}
	}
	tok, err := secret.NewToken(id)
	if err != nil || tok.Reveal() != id {
		return &wire.HandoffShard{Shard: sh.id, Reason: FallbackNoSession}
	}
	snap, err := sh.snapshot()
	if err != nil {
		sh.log.Warn("State snapshot failed; the replacement identifies this shard", "err", err)
		return &wire.HandoffShard{Shard: sh.id, Reason: FallbackSnapshot}
	}
	sh.mu.Lock()
	url := sh.resumeURL
	sh.mu.Unlock()
	return &wire.HandoffShard{Shard: sh.id, SessionID: tok, Seq: seq, ResumeURL: url, Snapshot: snap}
}

// thaw ends a freeze: the shard RESUMEs its own session.
func (sh *shard) thaw() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.handoff.frozen {
		sh.handoff.frozen, sh.handoff.resume = false, true
		close(sh.handoff.thawed)
	}
}

// frozenOrThawed reports whether the last connection ended by a freeze: the
// shard is still frozen, or thawed since (then it resumes at once, without
// the reconnect delay).
func (sh *shard) frozenOrThawed() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	thawed := sh.handoff.resume
	sh.handoff.resume = false
	return sh.handoff.frozen || thawed
}

// snapshot gob-encodes the State, read under its lock.
func (sh *shard) snapshot() ([]byte, error) {
	st := sh.s.State
	st.RLock()
	snap := stateSnapshot{Version: st.Version, User: st.User, Application: st.Application, PrivateChannels: st.PrivateChannels}
	if st.Shard != nil {
		s := *st.Shard
		snap.Shard = &s
	}
	snap.Guilds = make([]*discordgo.Guild, len(st.Guilds))
	for i, g := range st.Guilds {
		c := *g
		c.Channels = withoutMessages(g.Channels)
		c.Threads = withoutMessages(g.Threads)
		snap.Guilds[i] = &c
	}
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(&snap)
	st.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("encode State: %w", err)
	}
	return buf.Bytes(), nil
}

func withoutMessages(chs []*discordgo.Channel) []*discordgo.Channel {
	out := make([]*discordgo.Channel, len(chs))
	for i, ch := range chs {
		c := *ch
		c.Messages = nil
		out[i] = &c
	}
	return out
}

// awaitHandoff, in a replacement, waits for what its predecessor handed
// over and restores it: the shard then RESUMEs. false: ctx ended first.
func (sh *shard) awaitHandoff(ctx context.Context) bool {
	c := sh.c
	if c.handoff == nil {
		return true
	}
	select {
	case <-c.handoff.done:
	case <-ctx.Done():
		return false
	}
	h := c.handoff.shard(sh.id)
	reason := FallbackNoSession
	switch {
	case h == nil:
	case h.sessionID.Empty():
		if h.reason == FallbackSnapshot || h.reason == FallbackUnsupported {
			reason = h.reason
		}
	case c.fieldsErr != nil:
		reason = FallbackUnsupported
	case h.tooBig:
		reason = FallbackSnapshot
	case len(h.snapshot) == 0: // a crash's checkpoint: a session, no State
		if err := sh.restoreSession(ctx, h); err != nil {
			sh.log.Warn("crash resume: cannot prepare the session; identifying instead", "err", err)
			reason = FallbackNoUser
		} else {
			return true
		}
	default:
		if err := sh.restore(h); err != nil {
			sh.log.Warn("handoff: cannot restore the State; identifying instead", "err", err)
			reason = FallbackSnapshot
		} else {
			return true
		}
	}
	c.handoffMetrics.fallbacks.WithLabelValues(c.handoffCause, reason).Inc()
	sh.log.Warn("handoff: no session to resume; identifying", "reason", reason)
	return true
}

// restore fills the State from the snapshot and primes discordgo to RESUME
// at the resume URL.
func (sh *shard) restore(h *handedShard) error {
	var snap stateSnapshot
	if err := gob.NewDecoder(bytes.NewReader(h.snapshot)).Decode(&snap); err != nil {
		return fmt.Errorf("decode State: %w", err)
	}
	st := sh.s.State
	st.Lock()
	st.Ready = discordgo.Ready{Version: snap.Version, SessionID: h.sessionID.Reveal(), User: snap.User,
		Application: snap.Application, Shard: snap.Shard, PrivateChannels: snap.PrivateChannels}
	st.Unlock()
	ids := make([]string, 0, len(snap.Guilds))
	for _, g := range snap.Guilds {
		if err := st.GuildAdd(g); err != nil {
			return fmt.Errorf("restore guild: %w", err)
		}
		ids = append(ids, g.ID)
	}
	for _, ch := range snap.PrivateChannels {
		_ = st.ChannelAdd(ch)
	}
	gateway := ""
	if h.resumeURL != "" {
		gateway = gatewayURL(h.resumeURL)
	}
	if err := sh.c.fields.prime(sh.s, h.sessionID.Reveal(), h.seq, gateway); err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.hasSession, sh.resumeURL, sh.sessionID = true, h.resumeURL, h.sessionID
	sh.handoff.restored = true
	sh.guilds.ready(ids)
	sh.guilds.pending = nil // every guild came with the State
	sh.log.Info("handoff: State restored; resuming", "guilds", len(ids), "snapshot_bytes", len(h.snapshot))
	return nil
}

// identifiedLocked is an IDENTIFY sent. If the shard's RESUME after a
// handoff was refused (op 9, and discordgo identifies at once on the same
// socket), the handed-over State is dropped: the new session's READY and
// GUILD_CREATEs fill it afresh. Called with sh.mu held.
func (sh *shard) identifiedLocked() {
	sh.sessionID = secret.Token{} // the session it had, if any, is over
	if !sh.handoff.restored {
		return
	}
	sh.handoff.restored = false
	sh.c.handoffMetrics.fallbacks.WithLabelValues(sh.c.handoffCause, FallbackResumeRefused).Inc()
	sh.log.Warn("handoff: RESUME refused; identifying with a fresh State", "reason", FallbackResumeRefused)
	st := sh.s.State
	st.RLock()
	guilds := append([]*discordgo.Guild(nil), st.Guilds...)
	st.RUnlock()
	for _, g := range guilds {
		_ = st.GuildRemove(g)
	}
}

// resumedLocked is a RESUMED; called with sh.mu held.
func (sh *shard) resumedLocked() {
	if sh.handoff.restored {
		sh.handoff.restored = false
		sh.c.handoffMetrics.resumes.WithLabelValues(sh.c.handoffCause).Inc()
		sh.log.Info("handoff: session resumed")
	}
}

// handOver freezes every shard at once and sends each one's session and
// State to the supervisor, then HandoffEnd. It is the old process's answer
// to HandoffRequest.
func (c *Cluster) handOver() {
	c.handoffMu.Lock()
	defer c.handoffMu.Unlock()
	l := c.cfg.Link
	switch {
	case !c.running.Load():
		l.send(&wire.HandoffEnd{Reason: "the cluster is not running its shards"})
		return
	case c.fieldsErr != nil: // nothing frozen: the supervisor stops this process as before
		l.send(&wire.HandoffEnd{Reason: FallbackUnsupported})
		return
	}
	c.frozen.Store(true)
	start := time.Now()
	var (
		wg    sync.WaitGroup
		sends sync.Mutex // one shard's chunks in order; shards may interleave
		total int
		given int
	)
	for _, sh := range c.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := sh.freeze(c.fields, c.fieldsErr)
			sends.Lock()
			defer sends.Unlock()
			if !m.SessionID.Empty() {
				given++
			}
			total += len(m.Snapshot)
			sendChunks(l, m)
		}()
	}
	wg.Wait()
	c.handoffMetrics.bytes.Add(float64(total))
	l.send(&wire.HandoffEnd{Shards: len(c.shards)})
	c.log.Info("handoff: shards frozen and handed over", "shards", len(c.shards), "sessions", given,
		"snapshot_bytes", total, "took", time.Since(start).Round(time.Millisecond))
	c.changed()
}

// sendChunks sends m with its snapshot cut into chunks.
func sendChunks(l *Link, m *wire.HandoffShard) {
	for c := range m.Chunks() {
		l.send(c)
	}
}

// thawAll is the answer to HandoffAbort: every shard resumes its own
// session and the process goes on serving.
func (c *Cluster) thawAll(reason string) {
	c.handoffMu.Lock() // after the freeze, if it is still under way
	defer c.handoffMu.Unlock()
	c.log.Warn("handoff aborted; resuming this process's own sessions", "reason", reason)
	c.frozen.Store(false)
	for _, sh := range c.shards {
		sh.thaw()
	}
}

// handoffInbox collects, in a replacement, what the old process hands over.
type handoffInbox struct {
	done chan struct{} // closed by HandoffEnd

	mu     sync.Mutex
	shards map[int]*handedShard
	last   int  // the shard whose chunks are coming
	more   bool // more chunks of last follow
	ended  bool
}

func newHandoffInbox() *handoffInbox {
	return &handoffInbox{done: make(chan struct{}), shards: map[int]*handedShard{}}
}

var errHandoffOrder = errors.New("handoff chunk out of order")

// add takes one HandoffShard.
func (in *handoffInbox) add(m *wire.HandoffShard) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.ended {
		return errors.New("handoff shard after its end")
	}
	h, seen := in.shards[m.Shard]
	switch {
	case !seen && in.more:
		return errHandoffOrder
	case !seen:
		h = &handedShard{sessionID: m.SessionID, seq: m.Seq, resumeURL: m.ResumeURL, reason: m.Reason}
		in.shards[m.Shard] = h
	case !in.more || in.last != m.Shard:
		return errHandoffOrder
	}
	in.last, in.more = m.Shard, m.More
	if len(h.snapshot)+len(m.Snapshot) > wire.MaxSnapshot {
		h.tooBig, h.snapshot = true, nil
	}
	if !h.tooBig {
		h.snapshot = append(h.snapshot, m.Snapshot...)
	}
	return nil
}

func (in *handoffInbox) end() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.ended {
		in.ended = true
		close(in.done)
	}
}

// shard returns what was handed over for id, once, or nil.
func (in *handoffInbox) shard(id int) *handedShard {
	in.mu.Lock()
	defer in.mu.Unlock()
	h := in.shards[id]
	delete(in.shards, id)
	return h
}
