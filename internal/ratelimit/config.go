package ratelimit

import (
	"fmt"
	"log/slog"
	"time"
)

// Defaults for Config.
const (
	DefaultGlobal        = 50
	DefaultInvalidLimit  = 10000
	DefaultInvalidWindow = 10 * time.Minute
	DefaultSlowAt        = 0.5
	DefaultSlowRecent    = time.Minute
	DefaultProbe         = time.Second
	DefaultMargin        = 100 * time.Millisecond
	DefaultTicketTTL     = time.Minute
)

// Bounds on what the Limiter learns, against keys it was never meant to
// see (a path with a fresh token in every request, say): past them,
// routes and bucket hashes are not remembered, and are probed each time.
const (
	maxRoutes = 4096
	maxHashes = 4096
)

// Config sets a Limiter's limits. The zero value of every field means its
// default.
type Config struct {
	// Global is the global limit, requests per second (DefaultGlobal).
	Global int
	// InvalidLimit and InvalidWindow are Discord's ban: this many invalid
	// requests (401, 403, 429 but scope shared) within the window.
	InvalidLimit  int
	InvalidWindow time.Duration
	// SlowAt is the fraction of InvalidLimit past which the limiter slows
	// down: a bucket that had an invalid answer within SlowRecent gets
	// half its limit per window (at least one) until the count is back
	// under. 1 or more: never.
	SlowAt     float64
	SlowRecent time.Duration
	// Probe is the spacing of the requests of a route whose bucket is not
	// known yet: one request per Probe until its first answer says more.
	Probe time.Duration
	// Margin is the jitter of the way to Discord that the model absorbs:
	// a window takes requests until Margin before its end and the next
	// opens Margin after it. Negative: none.
	Margin time.Duration
	// TicketTTL is how long after its send time a ticket may stay
	// unreported; then it is forgotten as if cancelled.
	TicketTTL time.Duration
	// Logger receives the rare events: global 429s, 429s the model did
	// not foresee, slowing down and back. nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock of Stats, the metrics and the sweeps of expired
	// tickets (Ticket, Report and Cancel take theirs). nil: time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Global < 0 || c.InvalidLimit < 0 || c.InvalidWindow < 0 || c.SlowAt < 0 ||
		c.SlowRecent < 0 || c.Probe < 0 || c.TicketTTL < 0 {
		return fmt.Errorf("rest limiter: negative setting in %+v", *c)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Global, DefaultGlobal)
	def(&c.InvalidLimit, DefaultInvalidLimit)
	defd(&c.InvalidWindow, DefaultInvalidWindow)
	defd(&c.SlowRecent, DefaultSlowRecent)
	defd(&c.Probe, DefaultProbe)
	defd(&c.TicketTTL, DefaultTicketTTL)
	switch {
	case c.Margin == 0:
		c.Margin = DefaultMargin
	case c.Margin < 0:
		c.Margin = 0
	}
	if c.SlowAt == 0 {
		c.SlowAt = DefaultSlowAt
	}
	if c.InvalidWindow < invalidSlots {
		return fmt.Errorf("rest limiter: invalid request window %v too short", c.InvalidWindow)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
