package ratelimit

import (
	"time"
)

// sweep expires tickets unreported past TicketTTL, drops keys and buckets
// idle as long, and lets the slow down end as the invalid window slides.
// It runs at most once a second, from Ticket, Report, Cancel and Stats;
// it returns what to log and count once the lock is released, if any.
func (l *Limiter) sweep(n tick) func() {
	l.nextSweep = n + tick(time.Second)
	ttl := tick(l.cfg.TicketTTL)
	expired := 0
	for key, ks := range l.keys {
		if len(ks.tickets) > 0 {
			k := 0
			for _, tk := range ks.tickets {
				if tk.at+ttl <= n {
					l.release(tk)
					expired++
					continue
				}
				ks.tickets[k] = tk
				k++
			}
			clear(ks.tickets[k:])
			ks.tickets = ks.tickets[:k]
		}
		if len(ks.tickets) == 0 && n-ks.active >= ttl {
			delete(l.keys, key)
		}
	}
	for id, b := range l.buckets {
		b.prune(n)
		if b.idle(n) && n-b.active >= ttl {
			b.dead = true
			delete(l.buckets, id)
		}
	}
	note := l.updateSlow(n)
	if expired > 0 {
		note = chain(note, func() { l.m.expire(expired) })
	}
	return note
}

// updateSlow enters or leaves the slow down by the invalid count at n,
// and returns the log line to write (after unlocking), if any.
func (l *Limiter) updateSlow(n tick) func() {
	count := l.invalid.count(n)
	slow := float64(count) > l.cfg.SlowAt*float64(l.cfg.InvalidLimit)
	if slow == l.slowed {
		return nil
	}
	l.slowed = slow
	limit := l.cfg.InvalidLimit
	if slow {
		return func() {
			l.log.Warn("rest: many invalid requests, slowing down buckets that had one",
				"invalid", count, "limit", limit, "window", l.cfg.InvalidWindow)
		}
	}
	return func() {
		l.log.Info("rest: invalid requests back under the slow down threshold", "invalid", count, "limit", limit)
	}
}

// Stats is the limiter's state, for the status page.
type Stats struct {
	// Invalid is the count of invalid requests in the window; Discord
	// bans the IP at InvalidLimit.
	Invalid      int
	InvalidLimit int
	// Slowed reports whether Invalid is past SlowAt of the limit.
	Slowed bool
	// GlobalUsed is how many tickets under the global limit are sent in
	// the last second, of GlobalLimit.
	GlobalUsed  int
	GlobalLimit int
	// GlobalPausedUntil is the end of a global 429's pause; zero if none.
	GlobalPausedUntil time.Time
	// Buckets is how many bucket states are held (per bucket and major
	// parameter); Routes how many routes have a known bucket (or none).
	Buckets int
	Routes  int
	// InFlight is how many tickets are not reported yet; Waiting how many
	// of them are for a send time still ahead.
	InFlight int
	Waiting  int
}

// Stats returns the state at Config.Now.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	n := l.tick(l.cfg.Now())
	var note func()
	if n >= l.nextSweep {
		note = l.sweep(n)
	}
	s := Stats{
		Invalid:      l.invalid.count(n),
		InvalidLimit: l.cfg.InvalidLimit,
		Slowed:       l.slowed,
		GlobalUsed:   l.global.used(n),
		GlobalLimit:  l.cfg.Global,
		Buckets:      len(l.buckets),
		InFlight:     l.inflight,
	}
	if l.pausedUntil > n {
		s.GlobalPausedUntil = l.time(l.pausedUntil)
	}
	for _, rt := range l.routes {
		if rt.hash != "" || rt.noLimit {
			s.Routes++
		}
	}
	for _, ks := range l.keys {
		for _, tk := range ks.tickets {
			if tk.at > n {
				s.Waiting++
			}
		}
	}
	l.mu.Unlock()
	if note != nil {
		note()
	}
	return s
}
