package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/internal/identify"
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
	guilds       map[string]struct{}
	tracking     bool                // waiting for the GUILD_CREATEs of READY's guilds
	pending      map[string]struct{} // READY's guilds not yet created
	early        map[string]struct{} // GUILD_CREATEs whose handler ran before READY's
	guildTimer   *time.Timer
	counts       shardCounts
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
		state: wire.ShardDown, since: time.Now(), guilds: map[string]struct{}{}}
	s, _ := discordgo.New("Bot " + c.cfg.Token.Reveal()) // never fails
	s.ShardID, s.ShardCount = id, c.cfg.ShardCount
	s.Identify.Intents = c.cfg.Intents
	s.ShouldReconnectOnError = false
	s.ShouldRetryOnRateLimit = true
	s.Client = c.httpClient
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
		s.State.RUnlock()
		sh.onReady(ids)
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
		if !outage { // an outage keeps the guild; a removal does not
			sh.mu.Lock()
			delete(sh.guilds, id)
			sh.mu.Unlock()
		}
	})
	s.AddHandler(func(_ *discordgo.Session, e *discordgo.Event) {
		sh.mu.Lock()
		sh.counts.dispatches++
		sh.mu.Unlock()
		c.metrics.event(e.Type)
	})
	s.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
		c.bot.dispatch(c.ctx, c.log, c.metrics, s, sh.id, i)
	})
	for _, h := range c.bot.handlers {
		s.AddHandler(h)
	}
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
// with 1000, ending it at Discord) or a fatal close code.
func (sh *shard) run(ctx context.Context) error {
	cfg := sh.c.cfg
	sh.s.Dialer = dialer(ctx, sh, func(g *gatedConn) {
		sh.mu.Lock()
		sh.conn = g
		sh.mu.Unlock()
	})
	defer sh.close()
	for fails := 0; ; {
		if ctx.Err() != nil {
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
func (sh *shard) close() {
	sh.mu.Lock()
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	sh.deadline = time.Time{}
	sh.mu.Unlock()
	_ = sh.s.CloseWithCode(websocket.CloseNormalClosure)
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
	sh.early = nil // GUILD_CREATEs seen so far belong to an older session
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

// Readiness: READY, then a GUILD_CREATE for each guild it listed (or the
// guild-ready timeout). discordgo runs each handler in its own goroutine, so
// a GUILD_CREATE's handler can run before READY's: those are kept in early.

func (sh *shard) onReady(guilds []string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.hasSession = true
	sh.deadline = time.Time{}
	sh.guilds = make(map[string]struct{}, len(guilds))
	sh.pending = map[string]struct{}{}
	for _, id := range guilds {
		sh.guilds[id] = struct{}{}
		if _, seen := sh.early[id]; !seen {
			sh.pending[id] = struct{}{}
		}
	}
	sh.early = nil
	sh.tracking = true
	if len(sh.pending) == 0 {
		sh.becomeReadyLocked()
		return
	}
	sh.setStateLocked(wire.ShardIdentifying)
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	sh.guildTimer = time.AfterFunc(sh.c.cfg.GuildReadyTimeout, func() {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if sh.tracking {
			sh.log.Warn("guilds missing after the guild-ready timeout; counting the shard as ready",
				"missing", len(sh.pending), "guild_ready_timeout", sh.c.cfg.GuildReadyTimeout)
			sh.becomeReadyLocked()
		}
	})
}

func (sh *shard) onGuildCreate(id string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.guilds[id] = struct{}{}
	switch {
	case sh.tracking:
		delete(sh.pending, id)
		if len(sh.pending) == 0 {
			sh.becomeReadyLocked()
		}
	case sh.state == wire.ShardIdentifying:
		if sh.early == nil {
			sh.early = map[string]struct{}{}
		}
		sh.early[id] = struct{}{}
	}
}

func (sh *shard) becomeReadyLocked() {
	sh.tracking, sh.pending = false, nil
	if sh.guildTimer != nil {
		sh.guildTimer.Stop()
	}
	sh.setStateLocked(wire.ShardReady)
}

func (sh *shard) onResumed() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.deadline = time.Time{}
	if !sh.tracking {
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
		Guilds: len(sh.guilds), LastIdentify: sh.lastIdentify}
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
