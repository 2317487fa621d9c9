package ratelimit

import "time"

// The global limit is kept as counts of send times in slots of globalSlot,
// in a ring that reaches globalSlots slots ahead. A send time may be taken
// in slot s only if every run of globalSpan consecutive slots that holds s
// stays within the limit. Discord counts a request when it arrives, up to
// globalJitter after its send time (the grant's way to the cluster, a late
// timer, the HTTP round trip): a one-second interval at Discord then holds
// send times from at most 1 s + globalJitter, which touch at most
// globalSpan slots, so it never holds more than the limit, however the
// send times fall inside their slots. The price is that a saturated limit
// runs at limit per globalSpan slots: 1.04 s, 96% of the rate.
const (
	globalSlot   = 10 * time.Millisecond
	globalJitter = 30 * time.Millisecond
	globalSpan   = int64((time.Second+globalJitter)/globalSlot) + 1
	globalSlots  = 8192 // ~80 s ahead
)

// globalWindow is the reservation ring of the global limit.
type globalWindow struct {
	limit int32
	idx   [globalSlots]int64 // the slot number that cnt counts, per ring entry
	cnt   [globalSlots]int32
}

func slotOf(t tick) int64 { return int64(t) / int64(globalSlot) }

func (g *globalWindow) count(s int64) int32 {
	i := s & (globalSlots - 1)
	if g.idx[i] != s {
		return 0
	}
	return g.cnt[i]
}

// find returns the earliest time at or after t when one more request fits
// the global limit, and false when that is beyond the ring's reach from
// now (then t itself: such a far ticket takes no global slot).
func (g *globalWindow) find(t, now tick) (tick, bool) {
	s := slotOf(t)
	last := slotOf(now) + globalSlots - globalSpan - 1
	var c [2*globalSpan - 1]int32
	for s <= last {
		// c[k] counts slot s-globalSpan+1+k.
		lo := s - globalSpan + 1
		for k := range c {
			c[k] = g.count(lo + int64(k))
		}
		var sum int32
		for k := range globalSpan {
			sum += c[k]
		}
		full := int64(-1) // the latest run start that is full
		if sum >= g.limit {
			full = lo
		}
		for k := int64(1); k < globalSpan; k++ {
			sum += c[k+globalSpan-1] - c[k-1]
			if sum >= g.limit {
				full = lo + k
			}
		}
		if full < 0 {
			if st := tick(s * int64(globalSlot)); st > t {
				return st, true
			}
			return t, true
		}
		s = full + globalSpan
	}
	return t, false
}

// take counts one send at t, which find returned with true.
func (g *globalWindow) take(t tick) {
	s := slotOf(t)
	i := s & (globalSlots - 1)
	if g.idx[i] != s {
		g.idx[i], g.cnt[i] = s, 0
	}
	g.cnt[i]++
}

// used is how many sends were taken in the second up to now (the slots
// that end within it, now's slot included).
func (g *globalWindow) used(now tick) int {
	s := slotOf(now)
	var n int32
	for k := range int64(time.Second / globalSlot) {
		n += g.count(s - k)
	}
	return int(n)
}
