package discordtest

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Discord's REST rate limits
// (https://discord.com/developers/docs/topics/rate-limits), as the fake
// applies them. Three limits, checked in this order after authorization:
//
//   - The global limit: RESTRateLimit requests per second per bot token (per
//     client IP for a request without one), in fixed one-second windows.
//     Interaction callbacks and webhook-token routes are outside it. Past it:
//     429 with Retry-After, X-RateLimit-Global: true, X-RateLimit-Scope:
//     global and {"message", "retry_after", "global": true}; no bucket
//     headers, as in Discord's example of a global 429.
//   - Per-route buckets: every route has one (RouteLimit), and routes naming
//     the same bucket share it. A bucket counts separately per major
//     parameter, so two channels never share a window. Every answer past
//     the limiter carries X-RateLimit-Limit, -Remaining, -Reset (unix
//     seconds), -Reset-After (seconds) and -Bucket (a hash of the bucket's
//     name, the same for every major parameter, as on Discord); times have
//     millisecond precision and are rounded up, so that a client that waits
//     for them is never early. Past the limit: 429 with the same headers,
//     Retry-After (whole seconds, rounded up), X-RateLimit-Scope: user (or
//     shared, for RouteLimit.Shared) and {"message", "retry_after",
//     "global": false}.
//   - Invalid requests: answers 401, 403 and 429 (but 429s of scope shared)
//     count per client IP in a sliding window of InvalidRequestWindow; the
//     request that passes InvalidRequestLimit bans the IP for BanPeriod.
//     While banned, every REST request from the IP is answered 403 with
//     Cloudflare's plain-text "error code: 1015" and is not counted again.
//     The gateway and the control API are not banned.
//
// A window opens at the first request that finds none open and lasts its
// period; refused requests do not use up the window.

// Rate limit scopes, as in X-RateLimit-Scope and RateLimitRecord.Scope.
const (
	ScopeUser   = "user"   // the bot's own per-route limit
	ScopeShared = "shared" // a shared resource's limit (RouteLimit.Shared); not an invalid request
	ScopeGlobal = "global" // the global limit (RESTRateLimit)
)

// Defaults for the rate limit options.
const (
	DefaultInvalidRequestLimit  = 10000
	DefaultInvalidRequestWindow = 10 * time.Minute
	DefaultBanPeriod            = time.Hour
)

// RouteLimit is the rate limit of one REST route (Options.RouteLimits).
type RouteLimit struct {
	Limit int           // requests per window; must be positive
	Per   time.Duration // the window, opened by the bucket's first request; at least 1 ms
	// Bucket names the bucket. Routes with the same name share it and must
	// agree on Limit, Per and Shared. Empty: the route's own pattern, a
	// bucket of its own.
	Bucket string
	// Shared marks the limit of a shared resource rather than of the bot:
	// its 429s say X-RateLimit-Scope: shared and are not invalid requests.
	Shared bool
}

// DefaultRouteLimits returns the per-route limits in force for routes that
// Options.RouteLimits leaves out, keyed by route pattern: every route the
// fake serves. Messages: 5 per 5 s per channel, as Discord answers; the
// two forms of GET applications/@me share a bucket, and so do a webhook
// message's GET, PATCH and DELETE; everything else 50 per second. Discord
// publishes no table (its limits change and clients must read the
// headers); these are close to what it sends. A fresh map on each call.
func DefaultRouteLimits() map[string]RouteLimit {
	m := make(map[string]RouteLimit)
	for _, rt := range restRoutes() {
		m[rt.pattern] = RouteLimit{Limit: 50, Per: time.Second}
	}
	m["POST channels/{channel}/messages"] = RouteLimit{Limit: 5, Per: 5 * time.Second}
	for _, p := range []string{"GET applications/@me", "GET oauth2/applications/@me"} {
		m[p] = RouteLimit{Limit: 50, Per: time.Second, Bucket: "application"}
	}
	for _, p := range []string{
		"GET webhooks/{app}/{token}/messages/{msg}", "PATCH webhooks/{app}/{token}/messages/{msg}",
		"DELETE webhooks/{app}/{token}/messages/{msg}",
	} {
		m[p] = RouteLimit{Limit: 50, Per: time.Second, Bucket: "webhook message"}
	}
	return m
}

// routeLimits returns the defaults with the overrides applied: a new map.
func routeLimits(overrides map[string]RouteLimit) (map[string]RouteLimit, error) {
	m := DefaultRouteLimits()
	for _, p := range slices.Sorted(maps.Keys(overrides)) {
		rl := overrides[p]
		if _, ok := m[p]; !ok {
			return nil, fmt.Errorf("route limits: unknown route %q", p)
		}
		if rl.Limit <= 0 || rl.Per < time.Millisecond {
			return nil, fmt.Errorf("route limits: %q: limit must be positive and per at least 1ms, got %d per %v", p, rl.Limit, rl.Per)
		}
		m[p] = rl
	}
	byName := map[string]string{} // bucket name → first route
	for _, p := range slices.Sorted(maps.Keys(m)) {
		rl := m[p]
		name := cmp.Or(rl.Bucket, p)
		if first, ok := byName[name]; ok {
			if f := m[first]; f.Limit != rl.Limit || f.Per != rl.Per || f.Shared != rl.Shared {
				return nil, fmt.Errorf("route limits: %q and %q share bucket %q but not its limit", first, p, name)
			}
			continue
		}
		byName[name] = p
	}
	return m, nil
}

// bucketHash is X-RateLimit-Bucket for a bucket name: opaque and stable.
func bucketHash(name string) string {
	sum := sha256.Sum256([]byte("discordtest bucket " + name))
	return hex.EncodeToString(sum[:16])
}

// majorParams are the path wildcards that make up a route's major
// parameter: the channel, else the guild, else a webhook's or an
// interaction's id and token.
func majorParams(pattern string) []string {
	_, path, _ := strings.Cut(pattern, " ")
	segs := strings.Split(path, "/")
	switch {
	case slices.Contains(segs, "{channel}"):
		return []string{"channel"}
	case slices.Contains(segs, "{guild}"):
		return []string{"guild"}
	case (segs[0] == "webhooks" || segs[0] == "interactions") && len(segs) >= 3:
		return []string{strings.Trim(segs[1], "{}"), strings.Trim(segs[2], "{}")}
	}
	return nil
}

// routePolicy is the resolved limit of one route.
type routePolicy struct {
	route  string
	name   string // bucket name
	hash   string // X-RateLimit-Bucket
	limit  int
	per    time.Duration
	shared bool
	major  []string // path wildcards of the major parameter
}

// majorOf is the major parameter of a request on the policy's route: the
// values of its wildcards joined by "/" ("" when the route has none).
func (p *routePolicy) majorOf(r *http.Request) string {
	switch len(p.major) {
	case 0:
		return ""
	case 1:
		return r.PathValue(p.major[0])
	}
	vs := make([]string, len(p.major))
	for i, n := range p.major {
		vs[i] = r.PathValue(n)
	}
	return strings.Join(vs, "/")
}

// window is a fixed window, open while now is before end.
type window struct {
	end  time.Time
	used int
}

// take opens a new window if none is open and uses one request of it,
// unless it is used up.
func (w *window) take(limit int, per time.Duration, now time.Time) bool {
	if !now.Before(w.end) {
		w.end, w.used = now.Add(per), 0
	}
	if w.used >= limit {
		return false
	}
	w.used++
	return true
}

type bucketKey struct{ name, major string }

// ipLog is one client IP's invalid requests in the sliding window, oldest
// first from head, and its ban.
type ipLog struct {
	at     []time.Time
	head   int
	banned time.Time // banned while now is before it
}

func (g *ipLog) trim(now time.Time, window time.Duration) {
	for g.head < len(g.at) && !g.at[g.head].After(now.Add(-window)) {
		g.head++
	}
	if g.head > 0 && g.head*2 >= len(g.at) {
		g.at = append(g.at[:0], g.at[g.head:]...)
		g.head = 0
	}
}

func (g *ipLog) count() int { return len(g.at) - g.head }

// verdict is the limiter's answer to one request.
type verdict struct {
	ok        bool
	scope     string // of a refusal
	hash      string // bucket hash; "" for the global limit
	limit     int
	remaining int
	reset     time.Time // end of the window
}

// limiter holds the REST rate limit state. Time is passed in, so that it
// runs under testing/synctest as well as in the server. Safe for concurrent
// use; its lock is a leaf. Windows that ran out are swept as the maps grow.
type limiter struct {
	global        int // per second, per identity
	invalidLimit  int
	invalidWindow time.Duration
	banPeriod     time.Duration
	routes        map[string]*routePolicy // by pattern; read-only

	mu      sync.Mutex
	buckets map[bucketKey]*window
	globals map[string]*window // by identity
	ips     map[string]*ipLog
	sweepAt int // size of the maps at which the next sweep runs
}

// newLimiter resolves limits (complete, from routeLimits) into policies.
func newLimiter(global int, limits map[string]RouteLimit, invalidLimit int, invalidWindow, ban time.Duration) *limiter {
	l := &limiter{
		global: global, invalidLimit: invalidLimit, invalidWindow: invalidWindow, banPeriod: ban,
		routes:  make(map[string]*routePolicy, len(limits)),
		buckets: make(map[bucketKey]*window),
		globals: make(map[string]*window),
		ips:     make(map[string]*ipLog),
		sweepAt: 1024,
	}
	for p, rl := range limits {
		name := cmp.Or(rl.Bucket, p)
		l.routes[p] = &routePolicy{
			route: p, name: name, hash: bucketHash(name), limit: rl.Limit, per: rl.Per,
			shared: rl.Shared, major: majorParams(p),
		}
	}
	return l
}

// allowGlobal applies the global limit to one request of identity who.
func (l *limiter) allowGlobal(who string, now time.Time) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.globals[who]
	if w == nil {
		l.sweepLocked(now)
		w = &window{}
		l.globals[who] = w
	}
	v := verdict{ok: w.take(l.global, time.Second, now), limit: l.global, remaining: l.global - w.used, reset: w.end}
	if !v.ok {
		v.scope = ScopeGlobal
	}
	return v
}

// allowRoute applies p's bucket for major to one request.
func (l *limiter) allowRoute(p *routePolicy, major string, now time.Time) verdict {
	k := bucketKey{p.name, major}
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.buckets[k]
	if w == nil {
		l.sweepLocked(now)
		w = &window{}
		l.buckets[k] = w
	}
	v := verdict{ok: w.take(p.limit, p.per, now), hash: p.hash, limit: p.limit, remaining: p.limit - w.used, reset: w.end}
	if !v.ok {
		v.scope = ScopeUser
		if p.shared {
			v.scope = ScopeShared
		}
	}
	return v
}

// bucket is the state of p's bucket for major at now.
func (l *limiter) bucket(p *routePolicy, major string, now time.Time) BucketState {
	st := BucketState{
		Route: p.route, Bucket: p.hash, Name: p.name, Major: major,
		Limit: p.limit, Per: p.per, Shared: p.shared, Remaining: p.limit,
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.buckets[bucketKey{p.name, major}]; w != nil && now.Before(w.end) {
		st.Remaining, st.Reset = p.limit-w.used, w.end
	}
	return st
}

// invalid counts one invalid request from ip. If it passes the limit, the
// IP is banned from now on, its count starts again from zero, and banned
// says until when.
func (l *limiter) invalid(ip string, now time.Time) (count int, banned time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.ips[ip]
	if g == nil {
		l.sweepLocked(now)
		g = &ipLog{}
		l.ips[ip] = g
	}
	g.trim(now, l.invalidWindow)
	g.at = append(g.at, now)
	count = g.count()
	if count > l.invalidLimit {
		g.at, g.head = nil, 0
		g.banned = now.Add(l.banPeriod)
		return count, g.banned
	}
	return count, time.Time{}
}

// bannedUntil reports whether ip is banned at now, and until when.
func (l *limiter) bannedUntil(ip string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.ips[ip]; g != nil && now.Before(g.banned) {
		return g.banned, true
	}
	return time.Time{}, false
}

// invalidCount is how many invalid requests of ip are in the window at now.
func (l *limiter) invalidCount(ip string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.ips[ip]
	if g == nil {
		return 0
	}
	g.trim(now, l.invalidWindow)
	return g.count()
}

// sweepLocked drops windows that ran out and IPs with nothing left to
// remember, once the maps have doubled since the last sweep.
func (l *limiter) sweepLocked(now time.Time) {
	if len(l.buckets)+len(l.globals)+len(l.ips) < l.sweepAt {
		return
	}
	maps.DeleteFunc(l.buckets, func(_ bucketKey, w *window) bool { return !now.Before(w.end) })
	maps.DeleteFunc(l.globals, func(_ string, w *window) bool { return !now.Before(w.end) })
	maps.DeleteFunc(l.ips, func(_ string, g *ipLog) bool {
		g.trim(now, l.invalidWindow)
		return g.count() == 0 && !now.Before(g.banned)
	})
	l.sweepAt = max(1024, 2*(len(l.buckets)+len(l.globals)+len(l.ips)))
}

// BucketState is a per-route rate limit bucket as the fake sees it now
// (Server.Bucket).
type BucketState struct {
	Route     string        `json:"route"`  // the route asked about
	Bucket    string        `json:"bucket"` // its hash, as in X-RateLimit-Bucket
	Name      string        `json:"name"`   // RouteLimit.Bucket, or the route of a bucket of its own
	Major     string        `json:"major"`
	Limit     int           `json:"limit"`
	Per       time.Duration `json:"per_ns"`
	Shared    bool          `json:"shared"`
	Remaining int           `json:"remaining"`
	Reset     time.Time     `json:"reset"` // end of the open window; zero when none is open
}

// Bucket returns the state of route's bucket for the major parameter major
// (a channel or guild id, or "id/token" of a webhook or an interaction; ""
// for a route without one), and false for an unknown route. Routes that
// share a bucket return the same state.
func (s *Server) Bucket(route, major string) (BucketState, bool) {
	p, ok := s.lim.routes[route]
	if !ok {
		return BucketState{}, false
	}
	return s.lim.bucket(p, major, time.Now()), true
}

// InvalidRequests returns how many invalid requests (401, 403, 429 but
// those of scope shared) from the client IP ip are in the sliding window
// now; it starts again from 0 when the IP is banned.
func (s *Server) InvalidRequests(ip string) int {
	return s.lim.invalidCount(ip, time.Now())
}

// clientIP is the host of r's remote address.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// countsInvalid reports whether an answer counts toward the IP ban.
func countsInvalid(status int, scope string) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return true
	case http.StatusTooManyRequests:
		return scope != ScopeShared
	}
	return false
}

// setBucketHeaders sets the X-RateLimit-* headers of a per-route verdict.
func setBucketHeaders(h http.Header, v verdict, now time.Time) {
	h.Set("X-RateLimit-Limit", strconv.Itoa(v.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(v.remaining))
	h.Set("X-RateLimit-Reset", unixSeconds(v.reset))
	h.Set("X-RateLimit-Reset-After", seconds(v.reset.Sub(now)))
	h.Set("X-RateLimit-Bucket", v.hash)
}

// writeRateLimited answers 429 for a refusal and returns its retry_after.
func writeRateLimited(w http.ResponseWriter, v verdict, now time.Time) time.Duration {
	after := ceilMilli(v.reset.Sub(now))
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(after.Seconds())), 10))
	h.Set("X-RateLimit-Scope", v.scope)
	global := v.scope == ScopeGlobal
	if global {
		h.Set("X-RateLimit-Global", "true")
	}
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"message": "You are being rate limited.", "retry_after": after.Seconds(), "global": global,
	})
	return after
}

// writeBanned answers a request from a banned IP as Cloudflare does.
func writeBanned(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte("error code: 1015"))
}

// ceilMilli rounds d up to a whole millisecond.
func ceilMilli(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

// seconds formats d in seconds with three decimals, rounded up.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(float64(ceilMilli(d)/time.Millisecond)/1000, 'f', 3, 64)
}

// unixSeconds formats t as unix seconds with three decimals, rounded up.
func unixSeconds(t time.Time) string {
	ms := (t.UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}
