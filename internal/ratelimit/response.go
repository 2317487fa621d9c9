package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Rate limit scopes, as in X-RateLimit-Scope.
const (
	ScopeUser   = "user"   // the bot's own per-route limit
	ScopeGlobal = "global" // the global limit
	ScopeShared = "shared" // a shared resource's limit: not an invalid request
)

// Response is what Report needs to know of Discord's answer to one
// request: its status and its rate limit headers (ParseHeaders).
// Its JSON is a report's body to the REST limits service (http.go).
type Response struct {
	// Status is the HTTP status; 0 for a request that got no answer (it
	// failed, or was never sent): it only gives its ticket back.
	Status int `json:"status,omitempty"`
	// Bucket is X-RateLimit-Bucket: the hash naming the bucket, the same
	// for every major parameter; "" when absent.
	Bucket string `json:"bucket,omitempty"`
	// Limit is X-RateLimit-Limit, the requests per window; 0 when absent,
	// and then Remaining and ResetAfter mean nothing.
	Limit int `json:"limit,omitempty"`
	// Remaining is X-RateLimit-Remaining.
	Remaining int `json:"remaining,omitempty"`
	// ResetAfter is X-RateLimit-Reset-After: how long from the answer
	// until the bucket's window ends.
	ResetAfter time.Duration `json:"reset_after_ns,omitempty"`
	// Global is X-RateLimit-Global: a 429 of the global limit.
	Global bool `json:"global,omitempty"`
	// Scope is X-RateLimit-Scope of a 429: ScopeUser, ScopeGlobal,
	// ScopeShared, or "" when absent.
	Scope string `json:"scope,omitempty"`
	// RetryAfter is Retry-After of a 429.
	RetryAfter time.Duration `json:"retry_after_ns,omitempty"`
}

// ParseHeaders reads the rate limit headers of Discord's answer with the
// given status. A header that is absent or malformed leaves its field
// zero. Seconds may have decimals; they are rounded up to a millisecond,
// so that a caller that waits for them is never early.
func ParseHeaders(status int, h http.Header) Response {
	r := Response{
		Status: status,
		Bucket: h.Get("X-RateLimit-Bucket"),
		Scope:  strings.ToLower(h.Get("X-RateLimit-Scope")),
	}
	if n, err := strconv.Atoi(h.Get("X-RateLimit-Limit")); err == nil && n > 0 {
		r.Limit = n
		if n, err := strconv.Atoi(h.Get("X-RateLimit-Remaining")); err == nil && n >= 0 {
			r.Remaining = n
		}
		r.ResetAfter = parseSeconds(h.Get("X-RateLimit-Reset-After"))
	}
	r.Global = strings.EqualFold(h.Get("X-RateLimit-Global"), "true")
	if r.Scope == ScopeGlobal {
		r.Global = true
	}
	r.RetryAfter = parseSeconds(h.Get("Retry-After"))
	return r
}

// parseSeconds reads a non-negative number of seconds, rounded up to a
// millisecond; 0 when s is not one. At most a day.
func parseSeconds(s string) time.Duration {
	if s == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0) {
		return 0
	}
	f = min(f, 86400)
	return time.Duration(math.Ceil(f*1000)) * time.Millisecond
}

// invalid reports whether Discord counts the answer toward the ban for
// invalid requests: 401, 403, and 429 but those of scope shared.
func (r Response) invalid() bool {
	switch r.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return true
	case http.StatusTooManyRequests:
		return r.Scope != ScopeShared
	}
	return false
}

// scope429 is the scope of a 429 for metrics and policy: the header's,
// else global when X-RateLimit-Global says so, else user when it has
// bucket headers, else "unknown" (no rate limit headers at all: not
// Discord's API but something in front of it, such as Cloudflare).
func (r Response) scope429() string {
	switch {
	case r.Global:
		return ScopeGlobal
	case r.Scope == ScopeUser || r.Scope == ScopeShared:
		return r.Scope
	case r.Limit > 0 || r.Bucket != "":
		return ScopeUser
	}
	return "unknown"
}
