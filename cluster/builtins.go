package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// The requests every cluster answers without code of the bot's.
const (
	// StatsRequest answers a Stats; no request data.
	StatsRequest = "shardvisor.stats"
	// GuildRequest answers a GuildInfo for a GuildQuery.
	GuildRequest = "shardvisor.guild"
)

// Stats is a cluster's answer to StatsRequest.
type Stats struct {
	ClusterID   int `json:"cluster_id"`
	ShardCount  int `json:"shard_count"`
	Shards      int `json:"shards"`
	ShardsReady int `json:"shards_ready"`
	Guilds      int `json:"guilds"`
	// Latency is the mean heartbeat round trip of the shards that have one.
	Latency     time.Duration `json:"latency_ns"`
	MemoryBytes uint64        `json:"memory_bytes"` // what the Go runtime holds from the OS
	Goroutines  int           `json:"goroutines"`
	PerShard    []ShardStats  `json:"per_shard"`
}

// ShardStats is one shard's part of Stats.
type ShardStats struct {
	ID      int           `json:"id"`
	State   string        `json:"state"`
	Latency time.Duration `json:"latency_ns"`
	Guilds  int           `json:"guilds"`
}

// GuildQuery is GuildRequest's request.
type GuildQuery struct {
	GuildID string `json:"guild_id"`
}

// GuildInfo is GuildRequest's answer: where the guild belongs and whether
// this cluster has it.
type GuildInfo struct {
	GuildID    string `json:"guild_id"`
	Shard      int    `json:"shard"`
	ClusterID  int    `json:"cluster_id"`
	ShardReady bool   `json:"shard_ready"`
	// Cached: the shard's State has the guild (or, with the guild cache
	// off, the gateway sent it); Name and MemberCount come from the State.
	Cached      bool   `json:"cached"`
	Name        string `json:"name,omitempty"`
	MemberCount int    `json:"member_count,omitempty"`
}

// builtin returns the built-in request of that name, or nil.
func builtin(name string) ServeFunc {
	switch name {
	case StatsRequest:
		return serveStats
	case GuildRequest:
		return serveGuild
	}
	return nil
}

func serveStats(_ context.Context, l *Local, _ json.RawMessage) (any, error) {
	st := Stats{ClusterID: l.ClusterID, ShardCount: l.ShardCount, Shards: len(l.c.shards), Goroutines: runtime.NumGoroutine()}
	var sum time.Duration
	var timed int
	for _, sh := range l.c.shards {
		s := sh.status()
		st.PerShard = append(st.PerShard, ShardStats{ID: s.ID, State: string(s.State), Latency: s.Latency, Guilds: s.Guilds})
		st.Guilds += s.Guilds
		if s.State == wire.ShardReady {
			st.ShardsReady++
		}
		if s.Latency > 0 {
			sum += s.Latency
			timed++
		}
	}
	if timed > 0 {
		st.Latency = sum / time.Duration(timed)
	}
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		st.MemoryBytes = sample[0].Value.Uint64()
	}
	return st, nil
}

func serveGuild(_ context.Context, l *Local, req json.RawMessage) (any, error) {
	var q GuildQuery
	if err := json.Unmarshal(req, &q); err != nil {
		return nil, fmt.Errorf("%s wants {\"guild_id\": \"...\"}: %w", GuildRequest, err)
	}
	shard, err := l.ShardOf(q.GuildID)
	if err != nil {
		return nil, err
	}
	info := GuildInfo{GuildID: q.GuildID, Shard: shard, ClusterID: l.ClusterID}
	sh := l.shard(shard)
	if sh == nil {
		return info, nil // not this cluster's: the caller asked the wrong one
	}
	sh.mu.Lock()
	info.ShardReady = sh.state == wire.ShardReady
	_, info.Cached = sh.guilds.guilds[q.GuildID]
	sh.mu.Unlock()
	// discordgo's State overwrites its guilds in place under its lock.
	if g, err := sh.s.State.Guild(q.GuildID); err == nil {
		sh.s.State.RLock()
		info.Cached, info.Name, info.MemberCount = true, g.Name, g.MemberCount
		sh.s.State.RUnlock()
	}
	return info, nil
}

// Stats asks every cluster for its Stats. The map has those that
// answered; the error says which did not.
func (f *Fleet) Stats(ctx context.Context) (map[int]Stats, error) {
	answers, err := f.Broadcast(ctx, StatsRequest, nil)
	if err != nil {
		return nil, err
	}
	return Decode[Stats](answers)
}

// Guild asks the cluster that has the guild about it.
func (f *Fleet) Guild(ctx context.Context, guildID string) (GuildInfo, error) {
	return As[GuildInfo](f.ForGuild(ctx, guildID, GuildRequest, GuildQuery{GuildID: guildID}))
}
