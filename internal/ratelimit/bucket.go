package ratelimit

import (
	"slices"
)

// tick is a time as nanoseconds since the Limiter's epoch.
type tick int64

// bucketID names one bucket state: a Discord bucket hash and a major
// parameter, or, while the route's hash is not known yet, "route " and
// the route.
type bucketID struct{ name, major string }

// hashInfo is what is known of a Discord bucket, whatever the major
// parameter: its limit and window.
type hashInfo struct {
	hash   string
	limit  int
	period tick
}

// window is a run of requests the model lets through together: it opens
// with its first send time (start) as Discord's windows open with their
// first request, takes up to cap requests sent before end, and the next
// window may not open before next. Discord's answers may bound end from
// above (cEnd), and next from above (cNextUp: Discord's window, which
// holds all of this one's requests, resets sooner than the model thinks)
// and from below (cNext: it resets later); 0 is no bound, and the lower
// bound wins.
type window struct {
	start, last, end, next tick
	cEnd, cNext, cNextUp   tick
	used, cap              int
}

func newWindow(t, period, margin tick, cap int) window {
	w := window{last: t, used: 1, cap: cap}
	w.open(t, period, margin)
	return w
}

// open sets the window's start, and its end and next from it.
func (w *window) open(t, period, margin tick) {
	w.start, w.end, w.next = t, t+usable(period, margin), t+period+margin
	if w.cEnd != 0 {
		w.end = max(min(w.end, w.cEnd), w.start)
	}
	if w.cNextUp != 0 {
		w.next = min(w.next, w.cNextUp)
	}
	w.next = max(w.next, w.cNext)
}

// bucket is the state of one bucket for one major parameter.
type bucket struct {
	id   bucketID
	info *hashInfo // nil while probing: one request per Probe
	wins []window  // in order of start; the first may be past
	// dEnd and dSpare are Discord's word: until dEnd, only dSpare more
	// requests may be sent (may be negative: more are out than it allows).
	dEnd   tick
	dSpare int
	// inflight are the send times of tickets not yet reported, in order.
	inflight    []tick
	lastInvalid tick // of the latest invalid answer; 0 when none
	active      tick // of the latest ticket or report
	merged      *bucket
	dead        bool // dropped from the limiter's map
}

// usable is how long after its start a window takes requests: its period
// less the margin, so that the last one reaches Discord before the window
// ends there even when it travels faster than the first.
func usable(period, margin tick) tick {
	if period > 2*margin {
		return period - margin
	}
	return period / 2
}

// prune drops the windows that no longer bound anything at now.
func (b *bucket) prune(now tick) {
	k := 0
	for k < len(b.wins) && b.wins[k].next <= now {
		k++
	}
	if k > 0 {
		b.wins = append(b.wins[:0], b.wins[k:]...)
	}
}

// place finds the earliest send time at or after t that the bucket
// allows, and where: in window i, or in a new window inserted at i (ins).
// It changes nothing.
func (b *bucket) place(t tick, period, margin tick) (at tick, i int, ins bool) {
	t = b.discordAllows(t, margin)
	for i := range b.wins {
		w := &b.wins[i]
		if i > 0 && t < b.wins[i-1].next {
			t = b.discordAllows(b.wins[i-1].next, margin)
		}
		if t < w.start {
			room := w.used < w.cap
			// Open w earlier if what it holds still fits, but not
			// across Discord's reset, which would make it straddle two
			// of Discord's windows.
			e := t + usable(period, margin)
			if w.cEnd != 0 {
				e = min(e, w.cEnd)
			}
			if room && w.last < e && (t >= b.dEnd || w.start < b.dEnd) {
				return t, i, false
			}
			// Or open a window of its own before w.
			next := t + period + margin
			if t < b.dEnd {
				next = b.dEnd // clamped as book will
			}
			if next <= w.start {
				return t, i, true
			}
			if room {
				return w.start, i, false
			}
			t = w.start
		}
		if w.used < w.cap && t < w.end {
			return t, i, false
		}
	}
	if n := len(b.wins); n > 0 {
		t = b.discordAllows(max(t, b.wins[n-1].next), margin)
	}
	return t, len(b.wins), true
}

// discordAllows is t, or Discord's reset when Discord allows no more
// before it or t is too close to it to tell on which side it falls.
func (b *bucket) discordAllows(t, margin tick) tick {
	if t < b.dEnd && (b.dSpare <= 0 || t >= b.dEnd-margin) {
		return b.dEnd
	}
	return t
}

// book takes one request at t where place said (a new window has
// capacity cap).
func (b *bucket) book(i int, ins bool, t, period, margin tick, cap int) {
	if ins {
		b.wins = slices.Insert(b.wins, i, newWindow(t, period, margin, cap))
	} else {
		w := &b.wins[i]
		w.used++
		if t < w.start {
			w.open(t, period, margin)
		}
		w.last = max(w.last, t)
	}
	if t < b.dEnd {
		b.dSpare--
		b.clamp(i, period, margin)
	}
	b.addInflight(t)
}

// clamp closes window i before Discord's window ends, when it starts
// before that end, and opens the next one right after it.
func (b *bucket) clamp(i int, period, margin tick) {
	w := &b.wins[i]
	if w.start >= b.dEnd {
		return
	}
	e := b.dEnd - margin
	if w.cEnd == 0 || e < w.cEnd {
		w.cEnd = max(e, 1)
	}
	w.cNext = max(w.cNext, b.dEnd)
	if w.last < e && (w.cNextUp == 0 || b.dEnd < w.cNextUp) {
		w.cNextUp = b.dEnd // all it holds is in Discord's window
	}
	w.open(w.start, period, margin)
}

// force counts a request already promised for t, whatever the windows
// allow (when the state of a probe is moved into a known bucket): into the
// window that covers t, else a new window there.
func (b *bucket) force(t, period, margin tick, cap int) {
	for i := len(b.wins) - 1; i >= 0; i-- {
		w := &b.wins[i]
		if w.start <= t && t < w.next {
			w.used++
			w.last = max(w.last, t)
			return
		}
		if w.start <= t {
			if i+1 < len(b.wins) && t+period+margin > b.wins[i+1].start {
				b.wins[i+1].used++ // no room for a window between: count it in the next one
				return
			}
			b.wins = slices.Insert(b.wins, i+1, newWindow(t, period, margin, cap))
			return
		}
	}
	if len(b.wins) > 0 && t+period+margin > b.wins[0].start {
		b.wins[0].used++
		return
	}
	b.wins = slices.Insert(b.wins, 0, newWindow(t, period, margin, cap))
}

func (b *bucket) addInflight(t tick) {
	i := len(b.inflight)
	for i > 0 && b.inflight[i-1] > t {
		i--
	}
	b.inflight = slices.Insert(b.inflight, i, t)
}

// removeInflight forgets one ticket sent at t; false if there is none.
func (b *bucket) removeInflight(t tick) bool {
	i, ok := slices.BinarySearch(b.inflight, t)
	if !ok {
		return false
	}
	b.inflight = slices.Delete(b.inflight, i, i+1)
	return true
}

// inflightIn is how many tickets not yet reported are sent in [from, to).
func (b *bucket) inflightIn(from, to tick) int {
	i, _ := slices.BinarySearch(b.inflight, from)
	j, _ := slices.BinarySearch(b.inflight, to)
	return j - i
}

// discord applies Discord's answer at now: remaining more requests
// before end, less those of ours still out in its window, which it may
// not have counted yet. An answer for the window already known (its end
// within half a period) can only lower what is left, since answers may
// arrive out of order, and only make its end earlier: every estimate of
// the end is late by the answer's way back, never early, so the earliest
// is the best. An answer for an older window is ignored; one for a newer
// window replaces it. Windows of the model that open before the end are
// closed early enough that nothing they hold falls after it, and the
// window after them opens only after it.
func (b *bucket) discord(end tick, remaining int, now, period, margin tick) {
	switch {
	case b.dEnd > now && end <= b.dEnd-period/2:
		return
	case b.dEnd > now && end < b.dEnd+period/2:
		b.dEnd = min(b.dEnd, end)
		b.dSpare = min(b.dSpare, remaining-b.inflightIn(b.dEnd-period-margin, b.dEnd))
	default:
		b.dEnd = end
		b.dSpare = remaining - b.inflightIn(b.dEnd-period-margin, b.dEnd)
	}
	b.clampAll(period, margin)
}

// clampAll clamps the windows that open in Discord's window, the period
// (and margin) before its end; older ones are of older windows.
func (b *bucket) clampAll(period, margin tick) {
	from := b.dEnd - period - margin
	for i := range b.wins {
		if s := b.wins[i].start; s >= b.dEnd {
			break
		} else if s >= from {
			b.clamp(i, period, margin)
		}
	}
}

// idle reports whether the bucket holds nothing that matters at now.
func (b *bucket) idle(now tick) bool {
	if len(b.inflight) > 0 || b.dEnd > now {
		return false
	}
	return len(b.wins) == 0 || b.wins[len(b.wins)-1].next <= now
}
