package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// shard runs one gateway session with its own reconnect loop: discordgo's
// (ShouldReconnectOnError) retries forever, ignores close codes and cannot be
// paced.
type shard struct {
	id  int
	c   *Cluster
	log *slog.Logger
	s   *discordgo.Session

	disconnected chan struct{} // a Disconnect event arrived

	mu           sync.Mutex
	state        wire.ShardState
	since        time.Time
	lease        identify.Lease // acquired for the next Open's IDENTIFY
	conn         *gatedConn     // the current connection
	hasSession   bool           // a READY arrived: Open will RESUME
	lastIdentify time.Time
	heartbeat    time.Time // when the gate saw the last heartbeat go out
	latency      time.Duration
	deadline     time.Time // connect must complete by then; zero: not connecting
	guilds       readiness
	guildTimer   *time.Timer // the guild-ready timeout of the last READY
	counts       shardCounts
	resumeURL    string       // READY's resume_gateway_url (discordgo keeps none)
	sessionID    secret.Token // READY's, for checkpoints; cleared by an IDENTIFY
	handoff      shardHandoff
	// frame is whether the bot is handed the dispatch being handled, a
	// frame* constant (shadow.go).
	frame atomic.Int32
}

// shardCounts are a shard's counters, for metrics.
type shardCounts struct {
	dispatches    uint64
	resumes       uint64 // RESUMEs sent after the first connect
	reidentifies  uint64 // IDENTIFYs sent after the first one
	sessionStarts uint64 // IDENTIFYs sent
}

func newShard(c *Cluster, id int) *shard {
	sh := &shard{id: id, c: c, log: c.log.With("shard_id", id), disconnected: make(chan struct{}, 1),
		state: wire.ShardDown, since: time.Now()}
	s, _ := discordgo.New("Bot " + c.cfg.Token.Reveal()) // never fails
	// discordgo runs each handler in a goroutine of its own unless
	// SyncEvents, so that a GUILD_CREATE's handler could run before its
	// READY's, or an old session's after the next one's READY, and the
	// shard's readiness would depend on the scheduler (issue 16). With
	// SyncEvents every handler runs in the goroutine that reads the frames,
	// in the gateway's order, and after the IDENTIFY that the gate reports
	// from the same goroutine (or from Open, before it reads READY). Only
	// the shard's own handlers below run there: they are quick and never
	// block (a slow one would hold up the reading of heartbeat ACKs, and
	// discordgo would take the connection for a zombie). Everything else,
	// interactions and the bot's handlers, is started in a goroutine of its
	// own, as discordgo would have done (inGoroutine). One window is left:
	// when discordgo's heartbeat goroutine closes a zombie connection while
	// the reading goroutine is in a frame's handlers, those finish
	// concurrently with the next connection's start, for that one frame.
	s.SyncEvents = true
	s.ShardID, s.ShardCount = id, c.cfg.ShardCount
	s.Identify.Intents = c.cfg.Intents
	s.ShouldReconnectOnError = false
	s.ShouldRetryOnRateLimit = true
	s.Client = c.httpClient
	s.Ratelimiter = c.ratelimiter
	s.LogLevel = discordgo.LogWarning // lower levels would log the IDENTIFY payload, token included
	c.cfg.Cache.apply(s.State)
	sh.s = s

	s.AddHandler(func(_ *discordgo.Session, _ *discordgo.Disconnect) {
		select {
		case sh.disconnected <- struct{}{}:
		default:
		}
	})
	// discordgo's State keeps the event's own *Guild values and overwrites
	// them later (GuildAdd does *g = *guild) under the State's lock: read
	// them under it too.
	s.AddHandler(func(s *discordgo.Session, r *discordgo.Ready) {
		s.State.RLock()
		ids := make([]string, len(r.Guilds))
		for i, g := range r.Guilds {
			ids[i] = g.ID
		}
		id := r.SessionID
		s.State.RUnlock()
		sh.onReady(ids, id)
	})
	s.AddHandler(func(_ *discordgo.Session, _ *discordgo.Resumed) { sh.onResumed() })
	s.AddHandler(func(s *discordgo.Session, g *discordgo.GuildCreate) {
		s.State.RLock()
		id := g.ID
		s.State.RUnlock()
		sh.onGuildCreate(id)
	})
	s.AddHandler(func(s *discordgo.Session, g *discordgo.GuildDelete) {
		s.State.RLock()
		id, outage := g.ID, g.Unavailable
		s.State.RUnlock()
		sh.onGuildDelete(id, outage)
	})
	s.AddHandler(func(_ *discordgo.Session, e *discordgo.Event) {
		var url string
		if e.Type == "READY" {
			url = resumeGatewayURL(e.RawData)
		}
		sh.mu.Lock()
		sh.counts.dispatches++
		if e.Type == "READY" {
			sh.resumeURL = url
		}
		sh.mu.Unlock()
		c.metrics.event(e.Type)
	})
	s.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
		if !sh.handles(i) {
			return // in shadow: the old shard set answers it
		}
		c.commands.Add(1)
		go func() {
			defer c.commands.Done()
			c.bot.dispatch(c.ctx, c.log, c.metrics, s, sh.id, i)
		}()
	})
	for _, h := range c.bot.handlers {
		s.AddHandler(inGoroutine(h, sh.handles))
	}
	s.AddHandler(sh.frameDone) // last: see handles
	return sh
}

func (sh *shard) setStateLocked(st wire.ShardState) {
	if sh.state != st {
		sh.state, sh.since = st, time.Now()
		sh.c.changed()
	}
}

func (sh *shard) setState(st wire.ShardState) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.setStateLocked(st)
}

// run connects and reconnects until ctx is done (then it closes the session
// with 1000, ending it at Discord, unless it was handed over) or a fatal
// close code. While frozen for a handoff it waits for thaw.
func (sh *shard) run(ctx context.Context) error {
	cfg := sh.c.cfg
	sh.s.Dialer = dialer(ctx, sh, func(g *gatedConn) error {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if sh.handoff.frozen {
			return errFrozen
		}
		sh.conn = g
		return nil
	})
	defer sh.close()
	if !sh.awaitHandoff(ctx) {
		return nil
	}
	for fails := 0; ; {
		if ctx.Err() != nil {
			return nil
		}
		if !sh.waitThaw(ctx) {
			return nil
		}
		sh.mu.Lock()
		fresh := !sh.hasSession
		sh.mu.Unlock()
		if fresh { // Open will IDENTIFY: wait for the turn before dialling
			l, err := sh.acquire(ctx)
			if err != nil {
				return nil // ctx done
			}
			sh.mu.Lock()
			sh.lease = l
			sh.mu.Unlock()
		}
		sh.mu.Lock()
		sh.setStateLocked(wire.ShardConnecting)
		sh.deadline = time.Now().Add(cfg.ShardConnectTimeout)
		sh.mu.Unlock()

		err := sh.s.Open()
		if l := sh.takeLease(); l != nil {
			l.Cancel() // not used: the dial failed, or Open resumed
		}
		if err == nil {
			fails = 0
			if !sh.waitDisconnect(ctx) {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if sh.frozenOrThawed() {
			continue // the freeze ended the connection: wait for thaw, or resume now
		}
		if f := fatalClose(sh.id, err, sh.closeCode()); f != nil {
			return f
		}
		fails++
		delay := jitter(0, cfg.ReconnectDelay)
		for i := 1; i < fails && delay < cfg.MaxReconnectDelay; i++ {
			delay *= 2
		}
		delay = min(delay, cfg.MaxReconnectDelay)
		sh.mu.Lock()
		sh.deadline = time.Time{}
		sh.setStateLocked(wire.ShardDown)
		sh.mu.Unlock()
		sh.log.Warn("gateway connection lost; reconnecting", "err", errString(err), "close_code", sh.closeCode(), "delay", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// waitDisconnect waits for the current connection to end; false means ctx
// ended first. A Disconnect event for an older connection is ignored.
func (sh *shard) waitDisconnect(ctx context.Context) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-sh.disconnected:
			sh.mu.Lock()
			closed := sh.conn == nil || sh.conn.Closed()
			sh.mu.Unlock()
			if closed {
				return true
			}
		}
	}
}

// close ends the session with 1000 so that Discord drops it at once rather
// than after a heartbeat timeout. discordgo sleeps 1 s in there under a lock:
// the cluster closes its shards in parallel.
// A frozen shard's session was handed over (or may still be taken back):
// it gets no close frame, and the call does not wait for discordgo's own
// close of the frozen connection (its reader's, with the same 1 s sleep
// under the same lock): a stop or a retirement after a handoff is not
// held up by it.
func (sh *shard) close() {
	sh.mu.Lock()
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	sh.deadline = time.Time{}
	frozen := sh.handoff.frozen
	sh.mu.Unlock()
	if !frozen {
		_ = sh.s.CloseWithCode(websocket.CloseNormalClosure)
	}
	sh.setState(wire.ShardDown)
}

func (sh *shard) closeCode() int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.conn == nil {
		return 0
	}
	return sh.conn.CloseCode()
}

// The gate's hooks.

func (sh *shard) takeLease() identify.Lease {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l := sh.lease
	sh.lease = nil
	return l
}

func (sh *shard) acquire(ctx context.Context) (identify.Lease, error) {
	sh.mu.Lock()
	saved := sh.deadline
	sh.deadline = time.Time{} // waiting for a turn is not a hung connect
	sh.setStateLocked(wire.ShardQueued)
	sh.mu.Unlock()
	l, err := sh.c.cfg.Identify.Acquire(ctx, sh.id)
	if err == nil && !saved.IsZero() {
		sh.mu.Lock()
		sh.deadline = time.Now().Add(sh.c.cfg.ShardConnectTimeout)
		sh.mu.Unlock()
	}
	return l, err
}

func (sh *shard) identifySent(_ bool, at time.Time) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.lastIdentify = at
	sh.log.Debug("IDENTIFY sent", "at_unix_us", at.UnixMicro())
	sh.counts.sessionStarts++
	if sh.counts.sessionStarts > 1 { // every IDENTIFY after the first starts a new session
		sh.counts.reidentifies++
	}
	sh.guilds.identify() // a new session: the old one's guilds will not come
	sh.identifiedLocked()
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	if sh.deadline.IsZero() {
		sh.deadline = time.Now().Add(sh.c.cfg.ShardConnectTimeout)
	}
	sh.setStateLocked(wire.ShardIdentifying)
}

func (sh *shard) resumeSent() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.counts.resumes++
	sh.setStateLocked(wire.ShardResuming)
}

func (sh *shard) heartbeatSent(at time.Time) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.heartbeat = at
}

func (sh *shard) invalidSessionWait() time.Duration {
	return jitter(sh.c.cfg.MinInvalidSessionWait, sh.c.cfg.MaxInvalidSessionWait)
}

// Readiness (see readiness): READY, then each guild it listed settled, or
// the guild-ready timeout. These run in discordgo's reading goroutine, in
// the order of the frames (see newShard).

func (sh *shard) onReady(guilds []string, sessionID string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.hasSession = true
	sh.sessionID, _ = secret.NewToken(sessionID) // empty if odd: then no checkpoint
	sh.deadline = time.Time{}
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	done, gen := sh.guilds.ready(guilds)
	if done {
		sh.setStateLocked(wire.ShardReady)
		return
	}
	sh.setStateLocked(wire.ShardIdentifying)
	sh.guildTimer = time.AfterFunc(sh.c.cfg.GuildReadyTimeout, func() { sh.guildReadyTimeout(gen) })
}

// guildReadyTimeout ends the wait for the guilds of READY generation gen,
// unless a later IDENTIFY or READY made it stale: Stop cannot take back a
// timer whose function has already started.
func (sh *shard) guildReadyTimeout(gen uint64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if missing, ended := sh.guilds.timeout(gen); ended {
		sh.log.Warn("guilds missing after the guild-ready timeout; counting the shard as ready",
			"missing", missing, "guild_ready_timeout", sh.c.cfg.GuildReadyTimeout)
		sh.setStateLocked(wire.ShardReady)
	}
}

func (sh *shard) onGuildCreate(id string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.guilds.guildCreate(id) {
		sh.becomeReadyLocked()
	}
}

func (sh *shard) onGuildDelete(id string, outage bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.guilds.guildDelete(id, outage) {
		sh.becomeReadyLocked()
	}
}

func (sh *shard) becomeReadyLocked() {
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	sh.setStateLocked(wire.ShardReady)
}

func (sh *shard) onResumed() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.deadline = time.Time{}
	sh.resumedLocked()
	if !sh.guilds.waiting() {
		sh.setStateLocked(wire.ShardReady)
	}
}

// status is the shard's report. The heartbeat latency is the last ACK
// (written under the session's lock, read under it here) less the time the
// gate saw the heartbeat leave: discordgo's HeartbeatLatency reads both
// without a lock, and writes LastHeartbeatSent under one nobody else can
// take. Open holds the session's lock for its whole run, and forever when
// it deadlocks: status must never wait for it, or the cluster could not
// report, nor notice the hang. When the lock is busy the last latency stands.
func (sh *shard) status() wire.ShardStatus {
	var ack time.Time
	locked := sh.s.TryRLock()
	if locked {
		ack = sh.s.LastHeartbeatAck
		sh.s.RUnlock()
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if locked && !sh.heartbeat.IsZero() && !ack.Before(sh.heartbeat) {
		sh.latency = ack.Sub(sh.heartbeat)
	}
	return wire.ShardStatus{ID: sh.id, State: sh.state, Since: sh.since, Latency: sh.latency,
		Guilds: sh.guilds.count(), LastIdentify: sh.lastIdentify}
}

// hung reports a connect that has not completed by its deadline.
func (sh *shard) hung(now time.Time) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.deadline.IsZero() || now.Before(sh.deadline) {
		return nil
	}
	return fmt.Errorf("shard %d: %w: in state %s for %v (-shard-connect-timeout %v)",
		sh.id, ErrConnectHung, sh.state, now.Sub(sh.since).Round(time.Millisecond), sh.c.cfg.ShardConnectTimeout)
}

// ErrConnectHung is wrapped when a shard's connect did not complete in time,
// as when discordgo deadlocks on op 7 during Open (upstream issue 513).
var ErrConnectHung = errors.New("gateway connect hung")
