package ratelimit

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limiter holds Discord's REST limits for every request of the bot that
// passes through it. Its methods are safe for concurrent use.
type Limiter struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	epoch time.Time

	mu          sync.Mutex
	keys        map[string]*keyState
	routes      map[string]*route
	hashes      map[string]*hashInfo
	buckets     map[bucketID]*bucket
	global      globalWindow
	pausedUntil tick
	invalid     invalidWindow
	slowed      bool
	nextSweep   tick
	inflight    int
}

// route is what is known of one route (a key without its major
// parameter): the bucket hash its answers named, or that they carried no
// rate limit headers at all.
type route struct {
	name    string
	hash    string
	noLimit bool
	gen     uint32 // changes with hash and noLimit
	reqs    *routeCounters
}

// keyState is one key: its route and major parameter, its bucket as last
// resolved, and its tickets not yet reported, oldest first.
type keyState struct {
	route   *route
	major   string
	outside bool
	b       *bucket
	gen     uint32
	cached  bool
	tickets []ticket
	active  tick
}

type ticket struct {
	b  *bucket // nil: a route without a bucket
	at tick    // send time
}

// New returns a Limiter that registers its metrics with reg (none if nil).
func New(cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	l := &Limiter{
		cfg: cfg,
		log: cfg.Logger,
		// An hour back, so that no time a caller passes is before it.
		epoch:   cfg.Now().Add(-time.Hour),
		keys:    make(map[string]*keyState),
		routes:  make(map[string]*route),
		hashes:  make(map[string]*hashInfo),
		buckets: make(map[bucketID]*bucket),
	}
	l.global.limit = int32(cfg.Global)
	l.invalid.slot = tick(cfg.InvalidWindow / invalidSlots)
	l.m = newMetrics(l, reg)
	return l, nil
}

func (l *Limiter) tick(t time.Time) tick { return tick(t.Sub(l.epoch)) }
func (l *Limiter) time(t tick) time.Time { return l.epoch.Add(time.Duration(t)) }

// Ticket reserves the send time of one request of key (from RouteKey) and
// returns how long from now the caller must wait before sending it: 0
// mostly. The caller then sends at now+wait and reports the answer with
// Report, or Cancel if it got none. The reservation holds whether or not
// the caller waits: a caller that does not want to wait should still send
// or Cancel, never ask again.
//
// The time is the earliest that respects the route's bucket for key's
// major parameter as learned from earlier answers (the package doc has
// the model), and the global limit unless OutsideGlobal(key), counting
// every ticket already handed out, reported or not.
func (l *Limiter) Ticket(key string, now time.Time) time.Duration {
	l.mu.Lock()
	n := l.tick(now)
	var swept func()
	if n >= l.nextSweep {
		swept = l.sweep(n)
	}
	ks := l.keyState(key, n)
	b := l.bucketFor(ks)
	t := n
	globalWait := false
	if !ks.outside && t < l.pausedUntil {
		t, globalWait = l.pausedUntil, true
	}
	var limit, wi int
	var ins bool
	var period tick
	margin := tick(l.cfg.Margin)
	slowed := false
	if b != nil {
		limit, period = l.params(b)
		if l.slowed && b.lastInvalid != 0 && n-b.lastInvalid < tick(l.cfg.SlowRecent) {
			limit, slowed = max(1, limit/2), true
		}
		b.prune(n)
		b.active = n
	}
	for {
		at := t
		if b != nil {
			at, wi, ins = b.place(t, period, margin)
		}
		if ks.outside {
			t = at
			break
		}
		g, ok := l.global.find(at, n)
		if g == at {
			if ok {
				l.global.take(at)
			}
			t = at
			break
		}
		t, globalWait = g, true // place again from there
	}
	if b != nil {
		b.book(wi, ins, t, period, margin, limit)
	}
	ks.tickets = append(ks.tickets, ticket{b: b, at: t})
	l.inflight++
	l.mu.Unlock()
	if swept != nil {
		swept()
	}
	wait := time.Duration(t - n)
	l.m.ticket(wait, globalWait, slowed)
	return wait
}

// Report tells the limiter Discord's answer to a request of key that had a
// ticket (that of key granted first); r.Status 0 is the same as Cancel.
// An answer without a ticket (expired, or never asked) is learned from all
// the same. What it learns: the bucket hash of key's route (and with it
// the state that routes sharing that hash share), the bucket's limit and
// window, how many requests Discord still allows before the window ends,
// a global 429's pause, and the count of invalid requests.
func (l *Limiter) Report(key string, r Response, now time.Time) {
	l.mu.Lock()
	n := l.tick(now)
	var note func()
	if n >= l.nextSweep {
		note = l.sweep(n)
	}
	ks := l.keyState(key, n)
	// The ticket is released only once the answer is learned from: a
	// probe's bucket counted again in the bucket's windows must count the
	// answered request too.
	var tk ticket
	has := len(ks.tickets) > 0
	if has {
		tk = ks.tickets[0]
		ks.tickets = append(ks.tickets[:0], ks.tickets[1:]...)
	}
	rt := ks.route
	if r.Status == 0 {
		if has {
			l.release(tk)
		}
		l.mu.Unlock()
		if note != nil {
			note()
		}
		l.m.request(rt, 0)
		return
	}
	invalid := r.invalid()
	if invalid {
		l.invalid.add(n)
		note = chain(note, l.updateSlow(n))
	}
	scope := ""
	if r.Status == http.StatusTooManyRequests {
		scope = r.scope429()
	}
	if scope == ScopeGlobal || scope == "unknown" {
		retry := r.RetryAfter
		if retry <= 0 {
			retry = time.Second
		}
		if until := n + tick(retry); until > l.pausedUntil {
			l.pausedUntil = until
		}
		if has {
			l.release(tk)
		}
		l.mu.Unlock()
		if note != nil {
			note()
		}
		l.m.request(rt, r.Status)
		l.m.limited429(scope)
		msg := "rest: global rate limit hit, pausing every request under it"
		if scope == "unknown" {
			msg = "rest: 429 without rate limit headers (Cloudflare?), pausing every request under the global limit"
		}
		l.log.Warn(msg, "key", key, "retry_after", retry, "scope", scope)
		return
	}
	l.learn(rt, r)
	b := l.bucketFor(ks)
	if has {
		l.release(tk)
	}
	if b != nil {
		b.active = n
		_, period := l.params(b)
		margin := tick(l.cfg.Margin)
		switch {
		case scope != "":
			retry := max(r.RetryAfter, r.ResetAfter)
			if retry <= 0 {
				retry = time.Duration(period)
			}
			b.dSpare = min(b.dSpare, 0)
			b.dEnd = max(b.dEnd, n+tick(retry))
			b.clampAll(period, margin)
			if scope == ScopeUser {
				note = chain(note, func() {
					l.log.Info("rest: bucket rate limit hit", "key", key, "bucket", r.Bucket, "retry_after", retry)
				})
			}
		case r.Limit > 0:
			b.discord(n+tick(r.ResetAfter), r.Remaining, n, period, margin)
		}
		if invalid {
			b.lastInvalid = n
		}
	}
	l.mu.Unlock()
	if note != nil {
		note()
	}
	l.m.request(rt, r.Status)
	if scope != "" {
		l.m.limited429(scope)
	}
}

// Cancel gives back the ticket of key granted first, for a request that
// got no answer (it failed or was not sent): it is no longer counted as
// in flight. Its slot in its window stays taken: it may have reached
// Discord.
func (l *Limiter) Cancel(key string, now time.Time) {
	l.Report(key, Response{}, now)
}

// chain returns a function that calls a then b, either of which may be
// nil.
func chain(a, b func()) func() {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func() { a(); b() }
}

// learn records what an answer says of its route and bucket hash.
func (l *Limiter) learn(rt *route, r Response) {
	switch {
	case r.Bucket != "" && r.Limit > 0:
		h := l.hashes[r.Bucket]
		if h == nil {
			if len(l.hashes) >= maxHashes {
				return
			}
			h = &hashInfo{hash: r.Bucket}
			l.hashes[r.Bucket] = h
		}
		if h.limit != r.Limit {
			h.limit, h.period = r.Limit, 0
		}
		if r.Status != http.StatusTooManyRequests {
			h.period = max(h.period, tick(r.ResetAfter))
		}
		if rt.hash != r.Bucket || rt.noLimit {
			rt.hash, rt.noLimit = r.Bucket, false
			rt.gen++
		}
	case r.Status/100 == 2 && r.Limit == 0 && r.Bucket == "":
		if !rt.noLimit {
			rt.hash, rt.noLimit = "", true
			rt.gen++
		}
	}
}

// params are the bucket's limit and window: Probe's while its hash is
// not known (or its window: the limit is known before it when the first
// answer was a 429).
func (l *Limiter) params(b *bucket) (limit int, period tick) {
	if b.info == nil || b.info.limit <= 0 {
		return 1, tick(l.cfg.Probe)
	}
	if b.info.period <= 0 {
		return b.info.limit, tick(l.cfg.Probe)
	}
	return b.info.limit, b.info.period
}

func (l *Limiter) keyState(key string, n tick) *keyState {
	ks := l.keys[key]
	if ks == nil {
		name, major, outside := splitKey(key)
		rt := l.routes[name]
		if rt == nil {
			rt = &route{name: name}
			if len(l.routes) < maxRoutes {
				l.routes[name] = rt
			}
			rt.reqs = l.m.routeCounters(name)
		}
		ks = &keyState{route: rt, major: major, outside: outside}
		l.keys[key] = ks
	}
	ks.active = n
	return ks
}

// bucketFor resolves the bucket of key's route and major parameter: nil
// for a route without rate limit headers. When a route's hash is first
// known, its probe's bucket becomes the hash's, or, when routes sharing
// the hash have one already, is merged into it.
func (l *Limiter) bucketFor(ks *keyState) *bucket {
	rt := ks.route
	if ks.cached && ks.gen == rt.gen && (ks.b == nil || !ks.b.dead) {
		return ks.b
	}
	ks.cached, ks.gen, ks.b = true, rt.gen, nil
	if rt.noLimit {
		return nil
	}
	probe := bucketID{"route " + rt.name, ks.major}
	if rt.hash == "" {
		b := l.buckets[probe]
		if b == nil {
			b = &bucket{id: probe}
			l.buckets[probe] = b
		}
		ks.b = b
		return b
	}
	id := bucketID{rt.hash, ks.major}
	b, pb := l.buckets[id], l.buckets[probe]
	switch {
	case b == nil && pb != nil:
		l.adopt(pb, id)
		b = pb
	case b == nil:
		b = &bucket{id: id, info: l.hashes[rt.hash]}
		l.buckets[id] = b
	case pb != nil:
		l.merge(pb, b)
	}
	ks.b = b
	return b
}

// adopt makes probe bucket pb the bucket id, and counts its tickets again
// in windows of the bucket's limit.
func (l *Limiter) adopt(pb *bucket, id bucketID) {
	delete(l.buckets, pb.id)
	pb.id, pb.info = id, l.hashes[id.name]
	l.buckets[id] = pb
	limit, period := l.params(pb)
	margin := tick(l.cfg.Margin)
	pb.wins = pb.wins[:0]
	for _, t := range pb.inflight {
		pb.force(t, period, margin, limit)
	}
}

// merge moves probe bucket pb's tickets into b, the bucket of the hash
// its route turned out to share.
func (l *Limiter) merge(pb, b *bucket) {
	limit, period := l.params(b)
	margin := tick(l.cfg.Margin)
	for _, t := range pb.inflight {
		b.addInflight(t)
		b.force(t, period, margin, limit)
	}
	if pb.dEnd > b.dEnd {
		b.dEnd, b.dSpare = pb.dEnd, min(b.dSpare, pb.dSpare)
	}
	b.lastInvalid = max(b.lastInvalid, pb.lastInvalid)
	delete(l.buckets, pb.id)
	pb.inflight, pb.wins, pb.dead, pb.merged = nil, nil, true, b
}

// release forgets a ticket that was reported, cancelled or expired.
func (l *Limiter) release(tk ticket) {
	b := tk.b
	for b != nil && b.merged != nil {
		b = b.merged
	}
	if b != nil {
		b.removeInflight(tk.at)
	}
	l.inflight--
}
