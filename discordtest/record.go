package discordtest

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Outcome is how the fake answered an IDENTIFY or RESUME.
type Outcome string

// Outcomes.
const (
	OutcomeReady          Outcome = "READY"           // IDENTIFY accepted
	OutcomeResumed        Outcome = "RESUMED"         // RESUME accepted, missed dispatches replayed
	OutcomeInvalidSession Outcome = "INVALID_SESSION" // op 9 d:false, socket kept open
	OutcomeReconnect      Outcome = "RECONNECT"       // op 7 instead of READY (ReconnectInsteadOfReady)
	OutcomeClosed         Outcome = "CLOSED"          // connection closed with CloseCode
)

// ClosedBy says who ended a connection.
type ClosedBy string

// Closers.
const (
	ClosedByServer ClosedBy = "server" // the fake sent a close frame (or op 9 ended the session)
	ClosedByClient ClosedBy = "client" // the client sent a close frame
	ClosedByDrop   ClosedBy = "drop"   // TCP closed without a close frame, by either side
)

// Record is everything the fake observed. Server.Record returns a deep copy;
// JSON field names are those of the control API's GET /record. Durations
// are nanoseconds in JSON.
type Record struct {
	Identifies   []IdentifyRecord    `json:"identifies"`
	Resumes      []ResumeRecord      `json:"resumes"`
	Sessions     []SessionRecord     `json:"sessions"`
	Connections  []ConnRecord        `json:"connections"`
	Shards       []ShardLive         `json:"shards"`   // per (shard, count) seen live, sorted by count, then shard
	MaxLive      int                 `json:"max_live"` // most live sessions of any one shard at one moment
	Interactions []InteractionRecord `json:"interactions"`
	Starts       SessionStarts       `json:"session_starts"`
	TokenRevoked bool                `json:"token_revoked"` // the session start budget was overrun
	REST         []RESTCount         `json:"rest"`          // sorted by route, then status
	RateLimited  []RateLimitRecord   `json:"rate_limited"`  // every 429, in order
	// InvalidRequests counts answers 401, 403 and 429 (but 429s of scope
	// shared) toward the IP ban, from every IP; Server.InvalidRequests
	// gives one IP's count in the sliding window.
	InvalidRequests int         `json:"invalid_requests"`
	Bans            []BanRecord `json:"bans"`       // every IP ban, in order
	Dispatches      int64       `json:"dispatches"` // dispatch frames written to clients, replays included
	// GuildGrowth is the guild count over time: Options.Guilds at the
	// server's start, then one entry per AddGuilds. Guild k (in creation
	// order) exists from the At of the first entry with Guilds > k.
	GuildGrowth []GuildCount `json:"guild_growth"`
}

// GuildCount is the number of guilds from At on.
type GuildCount struct {
	At     time.Time `json:"at"`
	Guilds int       `json:"guilds"`
}

// IdentifyRecord is one IDENTIFY that decoded.
type IdentifyRecord struct {
	Conn       uint64        `json:"conn"`
	Shard      int           `json:"shard"`
	ShardCount int           `json:"shard_count"`
	Bucket     int           `json:"bucket"` // shard % max_concurrency; -1 for an invalid shard
	At         time.Time     `json:"at"`     // taken as soon as the frame was read
	Gap        time.Duration `json:"gap_ns"` // since the previous IDENTIFY of the bucket; 0 for the first
	// TooSoon: it came less than IdentifyInterval after the bucket's last
	// accepted IDENTIFY, broke the pacing and was answered op 9 d:false.
	TooSoon   bool    `json:"too_soon"`
	Outcome   Outcome `json:"outcome"`
	CloseCode int     `json:"close_code,omitempty"`
	SessionID string  `json:"session_id,omitempty"` // when accepted
}

// ResumeRecord is one RESUME that decoded.
type ResumeRecord struct {
	Conn       uint64    `json:"conn"`
	SessionID  string    `json:"session_id"`
	Shard      int       `json:"shard"` // -1 when the session is unknown
	ShardCount int       `json:"shard_count"`
	Seq        int64     `json:"seq"` // the client's last sequence number
	At         time.Time `json:"at"`
	Outcome    Outcome   `json:"outcome"`
	CloseCode  int       `json:"close_code,omitempty"`
	Replayed   int       `json:"replayed"` // dispatches replayed before RESUMED
}

// SessionRecord is one gateway session (one accepted IDENTIFY), across the
// connections it was resumed on.
type SessionRecord struct {
	ID         string    `json:"id"`
	Shard      int       `json:"shard"`
	ShardCount int       `json:"shard_count"`
	Start      time.Time `json:"start"`
	// End is when its last connection let go of it; zero while a connection
	// carries it. CloseCode and ClosedBy tell how; an op 9 from the server
	// is ClosedByServer with code 0.
	End        time.Time `json:"end"`
	CloseCode  int       `json:"close_code,omitempty"`
	ClosedBy   ClosedBy  `json:"closed_by,omitempty"`
	Resumable  bool      `json:"resumable"`  // can still be resumed
	Dispatches int64     `json:"dispatches"` // frames written to its connections, replays included
	Resumes    int       `json:"resumes"`    // accepted RESUMEs
}

// Alive reports whether a connection carries the session now.
func (r SessionRecord) Alive() bool { return r.End.IsZero() }

// ConnRecord is one gateway websocket connection.
type ConnRecord struct {
	ID         uint64    `json:"id"`
	Opened     time.Time `json:"opened"`
	Closed     time.Time `json:"closed"` // zero while open
	Path       string    `json:"path"`   // of the URL dialled: GatewayPath, or ResumePath for READY's resume_gateway_url
	Shard      int       `json:"shard"`  // of its last session; -1 if none
	ShardCount int       `json:"shard_count"`
	SessionID  string    `json:"session_id,omitempty"`
	CloseCode  int       `json:"close_code,omitempty"`
	ClosedBy   ClosedBy  `json:"closed_by,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Sends      int       `json:"sends"`      // payloads handled, counted once handled
	Heartbeats int       `json:"heartbeats"` // of which heartbeats
}

// ShardLive counts live sessions of one (shard, count): past READY or
// RESUMED, on an open connection, receiving dispatches.
type ShardLive struct {
	Shard      int `json:"shard"`
	ShardCount int `json:"shard_count"`
	Live       int `json:"live"`     // now
	MaxLive    int `json:"max_live"` // most at one moment; 2 means a bot would answer twice
	// Intervals are the times at least one session of (shard, count) was
	// live, oldest first, disjoint: From is when Live went from 0 to 1
	// (the moment READY or RESUMED was queued), To when it went back to 0
	// (the session's connection let go of it), zero while still live. Both
	// are read under the lock that orders every live change, so intervals
	// of different shards compare exactly.
	Intervals []Interval `json:"intervals"`
}

// Interval is [From, To): To zero means not over yet.
type Interval struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// InteractionRecord is one INTERACTION_CREATE injected by Interact.
type InteractionRecord struct {
	ID       string    `json:"id"`
	GuildID  string    `json:"guild_id,omitempty"` // empty for a DM
	Shard    int       `json:"shard"`              // routed with RecommendedShards
	Command  string    `json:"command"`
	SentAt   time.Time `json:"sent_at"`
	Sessions []string  `json:"sessions"` // sessions it was dispatched to
	Replies  []Reply   `json:"replies"`  // every callback, follow-up and edit, accepted or not
}

// SessionStarts is the daily session start budget.
type SessionStarts struct {
	Total     int `json:"total"`
	Used      int `json:"used"` // accepted IDENTIFYs in this window
	Remaining int `json:"remaining"`
}

// RESTCount counts REST requests answered with one status on one route.
// Route is the method and the path template under /api/v{9,10}, e.g.
// "PUT applications/{app}/commands"; unmatched paths count as "unknown".
type RESTCount struct {
	Route  string `json:"route"`
	Status int    `json:"status"`
	Count  int    `json:"count"`
}

// RateLimitRecord is one REST request answered 429.
type RateLimitRecord struct {
	At    time.Time `json:"at"`
	Route string    `json:"route"`
	// Bucket is the X-RateLimit-Bucket hash of a per-route limit; "" for
	// the global limit.
	Bucket     string        `json:"bucket"`
	Major      string        `json:"major,omitempty"` // the major parameter, as Server.Bucket takes it
	Scope      string        `json:"scope"`           // ScopeUser, ScopeShared or ScopeGlobal
	RetryAfter time.Duration `json:"retry_after_ns"`
	Injected   bool          `json:"injected,omitempty"` // by FailREST
}

// BanRecord is a client IP banned for too many invalid requests.
type BanRecord struct {
	IP      string    `json:"ip"`
	At      time.Time `json:"at"`
	Until   time.Time `json:"until"`
	Invalid int       `json:"invalid"` // invalid requests in the window, the one that passed the limit included
}

// RateLimits returns how many 429s had scope (""; any), injected ones
// included.
func (r Record) RateLimits(scope string) int {
	n := 0
	for _, rl := range r.RateLimited {
		if scope == "" || rl.Scope == scope {
			n++
		}
	}
	return n
}

// Shard returns the live counts of (shard, count).
func (r Record) Shard(shard, count int) ShardLive {
	for _, l := range r.Shards {
		if l.Shard == shard && l.ShardCount == count {
			return l
		}
	}
	return ShardLive{Shard: shard, ShardCount: count}
}

// Session returns the session with id.
func (r Record) Session(id string) (SessionRecord, bool) {
	for _, ss := range r.Sessions {
		if ss.ID == id {
			return ss, true
		}
	}
	return SessionRecord{}, false
}

// RESTCalls returns how many requests on route were answered status
// (status 0: any status).
func (r Record) RESTCalls(route string, status int) int {
	n := 0
	for _, c := range r.REST {
		if c.Route == route && (status == 0 || c.Status == status) {
			n += c.Count
		}
	}
	return n
}

// Identified returns how many IDENTIFYs of shard (< 0: any shard) had
// outcome o.
func (r Record) Identified(shard int, o Outcome) int {
	n := 0
	for _, id := range r.Identifies {
		if id.Outcome == o && (shard < 0 || id.Shard == shard) {
			n++
		}
	}
	return n
}

// Clone returns a deep copy of r.
func (r Record) Clone() Record {
	c := r
	c.Identifies = slices.Clone(r.Identifies)
	c.Resumes = slices.Clone(r.Resumes)
	c.Sessions = slices.Clone(r.Sessions)
	c.Connections = slices.Clone(r.Connections)
	c.Shards = slices.Clone(r.Shards)
	for i := range c.Shards {
		c.Shards[i].Intervals = slices.Clone(c.Shards[i].Intervals)
	}
	c.GuildGrowth = slices.Clone(r.GuildGrowth)
	c.REST = slices.Clone(r.REST)
	c.RateLimited = slices.Clone(r.RateLimited)
	c.Bans = slices.Clone(r.Bans)
	c.Interactions = slices.Clone(r.Interactions)
	for i := range c.Interactions {
		c.Interactions[i].Sessions = slices.Clone(c.Interactions[i].Sessions)
		c.Interactions[i].Replies = slices.Clone(c.Interactions[i].Replies)
	}
	return c
}

type shardKey struct{ shard, count int }

type restKey struct {
	route  string
	status int
}

// recorder owns the Record. Every change wakes the WaitFor callers that
// looked at the record since the previous change. Its lock is a leaf: no
// other lock is taken while holding it.
type recorder struct {
	mu      sync.Mutex
	r       Record
	changed chan struct{}
	watched bool
	sess    map[string]int // session id → index in r.Sessions
	conns   map[uint64]int
	inter   map[string]int
	live    map[shardKey]int // index in r.Shards
	rest    map[restKey]int
	// lastTick is the time of the last change of coverage (see tick).
	lastTick time.Time
}

func newRecorder(starts, guilds int, now time.Time) *recorder {
	return &recorder{
		lastTick: now,
		r: Record{Starts: SessionStarts{Total: starts, Remaining: starts},
			GuildGrowth: []GuildCount{{At: now, Guilds: guilds}}},
		changed: make(chan struct{}),
		sess:    make(map[string]int),
		conns:   make(map[uint64]int),
		inter:   make(map[string]int),
		live:    make(map[shardKey]int),
		rest:    make(map[restKey]int),
	}
}

// snapshot returns a deep copy and a channel closed at the next change.
func (rc *recorder) snapshot() (Record, <-chan struct{}) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	r := rc.r.Clone()
	slices.SortFunc(r.Shards, func(a, b ShardLive) int {
		return cmp.Or(cmp.Compare(a.ShardCount, b.ShardCount), cmp.Compare(a.Shard, b.Shard))
	})
	slices.SortFunc(r.REST, func(a, b RESTCount) int {
		return cmp.Or(cmp.Compare(a.Route, b.Route), cmp.Compare(a.Status, b.Status))
	})
	rc.watched = true
	return r, rc.changed
}

// update applies f to the record under the lock and wakes waiters.
func (rc *recorder) update(f func(r *Record)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	f(&rc.r)
	if rc.watched {
		close(rc.changed)
		rc.changed = make(chan struct{})
		rc.watched = false
	}
}

func (rc *recorder) connOpened(id uint64, at time.Time, path string) {
	rc.update(func(r *Record) {
		rc.conns[id] = len(r.Connections)
		r.Connections = append(r.Connections, ConnRecord{ID: id, Opened: at, Shard: -1, Path: path})
	})
}

func (rc *recorder) conn(id uint64, f func(c *ConnRecord)) {
	rc.update(func(r *Record) {
		if i, ok := rc.conns[id]; ok {
			f(&r.Connections[i])
		}
	})
}

func (rc *recorder) identify(ir IdentifyRecord) {
	rc.update(func(r *Record) { r.Identifies = append(r.Identifies, ir) })
}

func (rc *recorder) resume(rr ResumeRecord) {
	rc.update(func(r *Record) { r.Resumes = append(r.Resumes, rr) })
}

func (rc *recorder) sessionStarted(sr SessionRecord, left int) {
	rc.update(func(r *Record) {
		rc.sess[sr.ID] = len(r.Sessions)
		r.Sessions = append(r.Sessions, sr)
		r.Starts.Remaining = left
		r.Starts.Used = r.Starts.Total - left
	})
}

func (rc *recorder) session(id string, f func(s *SessionRecord)) {
	rc.update(func(r *Record) {
		if i, ok := rc.sess[id]; ok {
			f(&r.Sessions[i])
		}
	})
}

// liveDelta adds d to the live count of k, keeps the maxima and the live
// intervals. The caller holds Server.mu, the lock under which sessions go
// live and stop being live, so the times taken here are in the order of
// those changes.
func (rc *recorder) liveDelta(k shardKey, d int) {
	rc.update(func(r *Record) {
		now := rc.tick()
		i, ok := rc.live[k]
		if !ok {
			i = len(r.Shards)
			rc.live[k] = i
			r.Shards = append(r.Shards, ShardLive{Shard: k.shard, ShardCount: k.count})
		}
		l := &r.Shards[i]
		was := l.Live
		l.Live += d
		l.MaxLive = max(l.MaxLive, l.Live)
		r.MaxLive = max(r.MaxLive, l.MaxLive)
		switch {
		case was == 0 && l.Live > 0:
			l.Intervals = append(l.Intervals, Interval{From: now})
		case was > 0 && l.Live == 0 && len(l.Intervals) > 0:
			l.Intervals[len(l.Intervals)-1].To = now
		}
	})
}

// guildsAdded records the guild count from now on. The caller holds
// Server.mu.
func (rc *recorder) guildsAdded(guilds int) {
	rc.update(func(r *Record) { r.GuildGrowth = append(r.GuildGrowth, GuildCount{At: rc.tick(), Guilds: guilds}) })
}

// tick returns the time of a change of coverage (a shard going live or
// not, guilds added): now, or a nanosecond after the previous tick if the
// clock has not moved, so that the times are strictly in the order of the
// changes and no gap between two changes collapses to nothing. The caller
// holds rc.mu.
func (rc *recorder) tick() time.Time {
	now := time.Now()
	if !now.After(rc.lastTick) {
		now = rc.lastTick.Add(time.Nanosecond)
	}
	rc.lastTick = now
	return now
}

func (rc *recorder) delivered(counts map[string]int64) {
	rc.update(func(r *Record) {
		for id, n := range counts {
			r.Dispatches += n
			if i, ok := rc.sess[id]; ok {
				r.Sessions[i].Dispatches += n
			}
		}
	})
}

func (rc *recorder) starts(left int, revoked bool) {
	rc.update(func(r *Record) {
		r.Starts.Remaining = left
		r.Starts.Used = r.Starts.Total - left
		r.TokenRevoked = r.TokenRevoked || revoked
	})
}

func (rc *recorder) interaction(ir InteractionRecord) {
	rc.update(func(r *Record) {
		rc.inter[ir.ID] = len(r.Interactions)
		r.Interactions = append(r.Interactions, ir)
	})
}

func (rc *recorder) reply(id string, rp Reply) {
	rc.update(func(r *Record) {
		if i, ok := rc.inter[id]; ok {
			r.Interactions[i].Replies = append(r.Interactions[i].Replies, rp)
		}
	})
}

// restCall counts a request; invalid: it counts toward the IP ban.
func (rc *recorder) restCall(route string, status int, invalid bool) {
	rc.update(func(r *Record) {
		if invalid {
			r.InvalidRequests++
		}
		k := restKey{route, status}
		i, ok := rc.rest[k]
		if !ok {
			i = len(r.REST)
			rc.rest[k] = i
			r.REST = append(r.REST, RESTCount{Route: route, Status: status})
		}
		r.REST[i].Count++
	})
}

func (rc *recorder) rateLimited(rl RateLimitRecord) {
	rc.update(func(r *Record) { r.RateLimited = append(r.RateLimited, rl) })
}

func (rc *recorder) ban(b BanRecord) {
	rc.update(func(r *Record) { r.Bans = append(r.Bans, b) })
}
