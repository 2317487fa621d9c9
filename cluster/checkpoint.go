package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// Crash resumes (the protocol is in internal/wire's checkpoint.go). A
// cluster welcomed with Checkpoint reports its sessions with every periodic
// status; the replacement of a crashed process is handed the last report:
// sessions without a State. It RESUMEs them with an empty cache, after
// asking Discord who the bot is (GET users/@me) so that handlers reading
// s.State.User find it as after a READY.

// userTimeout bounds the wait for GET users/@me before a crash resume.
const userTimeout = 10 * time.Second

// checkpoint returns the shard's session as a checkpoint entry, or false
// when it has none to resume: never connected, identifying afresh, or
// frozen for a handoff.
func (sh *shard) checkpoint() (wire.HandoffShard, bool) {
	if sh.c.fieldsErr != nil {
		return wire.HandoffShard{}, false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.hasSession || sh.sessionID.Empty() || sh.handoff.frozen {
		return wire.HandoffShard{}, false
	}
	return wire.HandoffShard{Shard: sh.id, SessionID: sh.sessionID, Seq: sh.c.fields.lastSeq(sh.s), ResumeURL: sh.resumeURL}, true
}

// checkpoint reports every shard's session to the supervisor, if it asked.
func (c *Cluster) checkpoint() {
	l := c.cfg.Link
	if l == nil || !l.Welcome().Checkpoint || c.frozen.Load() {
		return
	}
	m := &wire.SessionCheckpoint{}
	for _, sh := range c.shards {
		if e, ok := sh.checkpoint(); ok {
			m.Shards = append(m.Shards, e)
		}
	}
	if len(m.Shards) > 0 {
		l.send(m)
	}
}

var errNoUser = errors.New("no bot user")

// botUser asks Discord, once per process, who the bot is.
func (c *Cluster) botUser(ctx context.Context, s *discordgo.Session) (*discordgo.User, error) {
	c.userOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, userTimeout)
		defer cancel()
		u, err := s.User("@me", discordgo.WithContext(ctx))
		switch {
		case err != nil:
			c.userErr = fmt.Errorf("get users/@me: %w", err)
		case u == nil || u.ID == "":
			c.userErr = errNoUser
		default:
			c.user = u
		}
	})
	return c.user, c.userErr
}

// restoreSession primes discordgo to RESUME a crashed process's session,
// with an empty State but for the bot's user and the shard.
func (sh *shard) restoreSession(ctx context.Context, h *handedShard) error {
	u, err := sh.c.botUser(ctx, sh.s)
	if err != nil {
		return err
	}
	st := sh.s.State
	st.Lock()
	st.Ready = discordgo.Ready{SessionID: h.sessionID.Reveal(), User: u, Shard: &[2]int{sh.id, sh.c.cfg.ShardCount}}
	st.Unlock()
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
	sh.guilds.ready(nil)
	sh.guilds.pending = nil
	sh.log.Info("crash resume: resuming the session with an empty cache", "seq", h.seq)
	return nil
}
