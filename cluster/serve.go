package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// ServeFunc answers one named fleet request in this cluster. req is the
// caller's JSON (nil when it sent none); the answer is json.Marshal'ed (a
// json.RawMessage is sent as it is). ctx ends at the call's deadline or when
// the cluster stops. A panic is recovered and comes back to the caller as
// ErrHandlerPanic; the cluster carries on.
type ServeFunc func(ctx context.Context, c *Local, req json.RawMessage) (any, error)

// Serve adds a named request that every cluster of the bot answers, for
// Fleet's Broadcast, Ask and ForGuild. It panics when the name is not a
// valid request name (wire.CheckFleetName), is taken, or starts with
// "shardvisor." (the built-in requests'): all mistakes in the bot's code.
func (b *Bot) Serve(name string, fn ServeFunc) {
	if err := wire.CheckFleetName(name); err != nil || fn == nil {
		panic(fmt.Sprintf("cluster: Serve needs a valid name and a function: %v", err))
	}
	if strings.HasPrefix(name, "shardvisor.") {
		panic(fmt.Sprintf("cluster: request %q: the shardvisor. prefix is reserved", name))
	}
	if _, dup := b.served[name]; dup {
		panic(fmt.Sprintf("cluster: request %q served twice", name))
	}
	if b.served == nil {
		b.served = map[string]ServeFunc{}
	}
	b.served[name] = fn
}

// Local is a cluster's view of itself, for the requests it serves and the
// commands it runs.
type Local struct {
	ClusterID  int
	ShardIDs   []int
	ShardCount int
	// Fleet reaches the other clusters.
	Fleet *Fleet

	c *Cluster
}

type localKey struct{}

// FleetFrom returns the Fleet of the cluster that runs ctx's command or
// request (an Interaction's Context, a ServeFunc's ctx), or nil.
func FleetFrom(ctx context.Context) *Fleet {
	if l := LocalFrom(ctx); l != nil {
		return l.Fleet
	}
	return nil
}

// LocalFrom returns the cluster that runs ctx's command or request, or nil.
func LocalFrom(ctx context.Context) *Local {
	l, _ := ctx.Value(localKey{}).(*Local)
	return l
}

// Local is the cluster that runs the command.
func (i *Interaction) Local() *Local { return LocalFrom(i.Context) }

// Fleet reaches every cluster of the bot from the command.
func (i *Interaction) Fleet() *Fleet { return FleetFrom(i.Context) }

// Session returns the discordgo session (and so the State) of one of this
// cluster's shards, or nil if the shard is not this cluster's.
func (l *Local) Session(shardID int) *discordgo.Session {
	if sh := l.shard(shardID); sh != nil {
		return sh.s
	}
	return nil
}

func (l *Local) shard(id int) *shard {
	for _, sh := range l.c.shards {
		if sh.id == id {
			return sh
		}
	}
	return nil
}

// ShardOf returns the shard of a guild: (guild_id >> 22) % shard_count.
func (l *Local) ShardOf(guildID string) (int, error) {
	g, err := strconv.ParseUint(guildID, 10, 64)
	if err != nil || g == 0 {
		return 0, fmt.Errorf("guild id %q is not a snowflake", guildID)
	}
	return int((g >> 22) % uint64(l.ShardCount)), nil
}

func newLocal(c *Cluster) *Local {
	l := &Local{ClusterID: c.cfg.ClusterID, ShardIDs: c.cfg.ShardIDs, ShardCount: c.cfg.ShardCount, c: c}
	l.Fleet = &Fleet{local: l, link: c.cfg.Link}
	return l
}

// serve answers one request: a ServeFunc's, or a built-in's.
func (l *Local) serve(ctx context.Context, r *wire.FleetRequest) (reply *wire.FleetReply) {
	reply = &wire.FleetReply{ID: r.ID}
	fail := func(code wire.FleetCode, msg string) *wire.FleetReply {
		reply.Code, reply.Error, reply.Data = code, truncate(msg, wire.MaxFleetError), nil
		return reply
	}
	fn := builtin(r.Name)
	if fn == nil {
		fn = l.c.bot.served[r.Name]
	}
	if fn == nil {
		return fail(wire.FleetNoSuchName, fmt.Sprintf("cluster %d serves no request %q", l.ClusterID, r.Name))
	}
	defer func() {
		if p := recover(); p != nil {
			l.c.log.Error("fleet request handler panicked", "request", r.Name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			reply = fail(wire.FleetPanic, fmt.Sprint(p))
		}
	}()
	v, err := fn(context.WithValue(ctx, localKey{}, l), l, r.Data)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return fail(wire.FleetDeadline, err.Error())
	case err != nil:
		return fail(wire.FleetError, err.Error())
	}
	// Marshal a json.RawMessage too: compacted and escaped, it is what
	// travels, and the size that counts.
	data, err := json.Marshal(v)
	if err != nil {
		return fail(wire.FleetError, "encode answer: "+err.Error())
	}
	if len(data) > wire.MaxFleetAnswerData {
		return fail(wire.FleetTooLarge, fmt.Sprintf("answer of %d bytes exceeds the limit of %d", len(data), wire.MaxFleetAnswerData))
	}
	reply.Data = data
	return reply
}

// truncate cuts s to at most n bytes of valid UTF-8, on a rune boundary
// (invalid bytes would grow on the wire, past the limit the peer checks).
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
