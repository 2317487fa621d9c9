package discordtest

import (
	"cmp"
	"slices"
	"strconv"
	"time"
)

// Coverage: whether every guild had a live session at every moment. A
// guild is covered while at least one session holding it is live — of any
// shard count: its shard (guild_id >> 22) % count of that count — and
// uncovered otherwise. Live means past READY (or RESUMED) on an open
// connection, until the connection lets go of the session
// (ShardLive.Intervals); a detached session waiting for a RESUME does not
// cover its guilds, since their events reach nobody until it resumes.

// Gap is a time a guild was uncovered: [From, To).
type Gap struct {
	GuildID string    `json:"guild_id"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
}

// Uncovered returns every gap in [from, to) of every guild, sorted by From,
// then by guild in creation order; empty when every guild was covered
// throughout. A zero to means now; a guild added by AddGuilds counts from
// when it was added. Intervals still open count as live through to. The
// answer is exact for the recorded intervals: the fake stamps every change
// of coverage under one lock, with strictly increasing times, so a shard
// that stops being live before its replacement starts shows a gap however
// short, and one replaced first shows none. Before the first READY every
// guild is uncovered: from is typically when every shard had become live.
func (r Record) Uncovered(from, to time.Time) []Gap {
	if to.IsZero() {
		to = time.Now()
	}
	gaps := []Gap{}
	if !from.Before(to) {
		return gaps
	}
	live := make(map[shardKey][]Interval)
	var counts []int
	for _, l := range r.Shards {
		if len(l.Intervals) == 0 {
			continue
		}
		live[shardKey{l.Shard, l.ShardCount}] = l.Intervals
		if !slices.Contains(counts, l.ShardCount) {
			counts = append(counts, l.ShardCount)
		}
	}
	slices.Sort(counts)
	// Guilds routed to the same shard of every count share their gaps.
	memo := make(map[string][]Interval)
	key := make([]byte, 0, 8*len(counts))
	k := 0
	for _, g := range r.GuildGrowth {
		if !g.At.Before(to) {
			break
		}
		start := later(from, g.At)
		for ; k < g.Guilds; k++ {
			id := guildID(k)
			key = key[:0]
			for _, c := range counts {
				key = strconv.AppendInt(key, int64(routeShard(id, c)), 10)
				key = append(key, ',')
			}
			holes, ok := memo[string(key)]
			if !ok {
				var ivs []Interval
				for _, c := range counts {
					ivs = append(ivs, live[shardKey{routeShard(id, c), c}]...)
				}
				holes = uncovered(ivs, from, to)
				memo[string(key)] = holes
			}
			gid := strconv.FormatUint(id, 10)
			for _, h := range holes {
				if f := later(h.From, start); f.Before(h.To) {
					gaps = append(gaps, Gap{GuildID: gid, From: f, To: h.To})
				}
			}
		}
	}
	// Appended by guild, each guild's in order: a stable sort by From
	// keeps creation order among equal starts.
	slices.SortStableFunc(gaps, func(a, b Gap) int { return a.From.Compare(b.From) })
	return gaps
}

// uncovered returns the parts of [from, to) that no interval covers, in
// order; an interval with a zero To runs through to.
func uncovered(ivs []Interval, from, to time.Time) []Interval {
	ivs = slices.DeleteFunc(slices.Clone(ivs), func(iv Interval) bool { return !iv.From.Before(to) })
	for i := range ivs {
		if ivs[i].To.IsZero() || ivs[i].To.After(to) {
			ivs[i].To = to
		}
	}
	slices.SortFunc(ivs, func(a, b Interval) int { return cmp.Or(a.From.Compare(b.From), a.To.Compare(b.To)) })
	var out []Interval
	cur := from
	for _, iv := range ivs {
		if !iv.To.After(cur) {
			continue
		}
		if iv.From.After(cur) {
			out = append(out, Interval{From: cur, To: iv.From})
		}
		cur = iv.To
		if !cur.Before(to) {
			return out
		}
	}
	if cur.Before(to) {
		out = append(out, Interval{From: cur, To: to})
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Uncovered is Record().Uncovered(from, to): every time in [from, to) some
// guild had no live session of any shard count.
func (s *Server) Uncovered(from, to time.Time) []Gap {
	return s.Record().Uncovered(from, to)
}
