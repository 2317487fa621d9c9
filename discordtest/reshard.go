package discordtest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// What a live reshard needs, as Discord does it: the recommended shard
// count changes while the bot runs, guilds join, a shard that grows past
// MaxGuildsPerShard is closed with 4011, and sessions of two shard counts
// may be live at once (the new shard set identifying beside the old one),
// each guild's events going to its shard of every count.

// guildTotal is the current number of guilds.
func (s *Server) guildTotal() int { return int(s.guilds.Load()) }

// RecommendedShards is the shard count GET gateway/bot answers now:
// Options.Shards, or the last SetRecommendedShards.
func (s *Server) RecommendedShards() int { return int(s.shards.Load()) }

// SetRecommendedShards changes GET gateway/bot's shards to n (at least 1)
// from the next request on, as Discord raises it when a bot grows. Nothing
// else changes: live sessions keep their count, and IDENTIFYs of any valid
// count are still accepted. InteractionRecord.Shard is routed with it.
func (s *Server) SetRecommendedShards(n int) error {
	if n < 1 {
		return fmt.Errorf("set recommended shards: must be at least 1, got %d", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shards.Store(int64(n))
	s.log.Info("discordtest: recommended shards", "shards", n)
	return nil
}

// AddGuilds adds n guilds (the bot joins them) and returns their ids, in
// creation order. Ids are those guild.go's scheme gives the next indexes,
// so earlier ids and GuildIDsOf's answers for them do not change.
//
// Then, as Discord does: every session not yet ended whose shard now holds
// more than MaxGuildsPerShard guilds ends — a live one is closed with 4011
// "sharding required" (not resumable), a detached one stops being
// resumable — and every other session that is not ended gets one
// GUILD_CREATE per new guild routed to its shard ((guild_id >> 22) % its
// own count), whatever its count: live sessions now, detached ones on
// RESUME. The GUILD_CREATEs are queued before AddGuilds returns and before
// any MESSAGE_CREATE of the new guilds. New IDENTIFYs see the new count
// (4011 included). It fails for n < 1, past 10,000,000 guilds in all, or
// on a closed server.
func (s *Server) AddGuilds(n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("add guilds: n must be at least 1, got %d", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("add guilds: server closed")
	}
	from := s.guildTotal()
	to := from + n
	if to > maxGuilds {
		return nil, fmt.Errorf("add guilds: %d guilds in all would be more than %d", to, maxGuilds)
	}
	s.guilds.Store(int64(to))
	s.rec.guildsAdded(to)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.FormatUint(guildID(from+i), 10)
	}
	// Sessions in a stable order, so that a test sees the same order of
	// closes and GUILD_CREATEs each run.
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if !ss.ended {
			sessions = append(sessions, ss)
		}
	}
	slices.SortFunc(sessions, func(a, b *session) int {
		return cmp.Or(cmp.Compare(a.count, b.count), cmp.Compare(a.shard, b.shard), cmp.Compare(a.id, b.id))
	})
	type payloadKey struct{ k, threshold int }
	payloads := make(map[payloadKey][]byte)
	closed := 0
	for _, ss := range sessions {
		if guildCount(to, ss.shard, ss.count) > s.opts.MaxGuildsPerShard {
			s.endOversizedLocked(ss)
			closed++
			continue
		}
		for k := from; k < to; k++ {
			if routeShard(guildID(k), ss.count) != ss.shard {
				continue
			}
			key := payloadKey{k, ss.largeThreshold}
			p, ok := payloads[key]
			if !ok {
				p = s.guildCreate(k, ss.largeThreshold)
				payloads[key] = p
			}
			ss.dispatch("GUILD_CREATE", p)
		}
	}
	s.log.Info("discordtest: guilds added", "added", n, "guilds", to, "sessions_closed", closed)
	return ids, nil
}

// endOversizedLocked ends a session whose shard holds too many guilds:
// close 4011 on its connection, or, detached, no longer resumable. Caller
// holds s.mu.
func (s *Server) endOversizedLocked(ss *session) {
	if c := ss.conn; c != nil {
		s.closeConnLocked(c, 4011, "sharding required")
		return
	}
	ss.mu.Lock()
	ss.ended, ss.ring = true, replayRing{}
	ss.mu.Unlock()
	s.rec.session(ss.id, func(sr *SessionRecord) { sr.Resumable = false })
}

// LiveSession names one live session: past READY or RESUMED, on an open
// connection.
type LiveSession struct {
	ID         string `json:"id"`
	Shard      int    `json:"shard"`
	ShardCount int    `json:"shard_count"`
}

// LiveSessionsOf returns the sessions live now that hold the guild (its
// shard of their count), sorted by count, shard and id: during a reshard,
// one of the old count and one of the new. It fails for an id that is not
// one of the fake's guilds.
func (s *Server) LiveSessionsOf(guild string) ([]LiveSession, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := guildIndex(guild, s.guildTotal())
	if !ok {
		return nil, fmt.Errorf("live sessions of %q: unknown guild", guild)
	}
	out := []LiveSession{}
	for c := range s.conns {
		if ss := c.sess; c.live && ss != nil && routeShard(guildID(k), ss.count) == ss.shard {
			out = append(out, LiveSession{ID: ss.id, Shard: ss.shard, ShardCount: ss.count})
		}
	}
	slices.SortFunc(out, func(a, b LiveSession) int {
		return cmp.Or(cmp.Compare(a.ShardCount, b.ShardCount), cmp.Compare(a.Shard, b.Shard), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}
