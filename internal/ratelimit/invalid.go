package ratelimit

// invalidSlots is how many slots the invalid request window is cut into:
// 10 s each for Discord's 10 minutes. The count is the sum of the slots
// that end within the window, so it forgets an invalid request up to one
// slot late, never early: the safe side.
const invalidSlots = 60

// invalidWindow counts invalid requests in a sliding window.
type invalidWindow struct {
	slot tick // length of one slot
	idx  [invalidSlots]int64
	cnt  [invalidSlots]int
}

func (w *invalidWindow) add(now tick) {
	s := int64(now / w.slot)
	i := s % invalidSlots
	if w.idx[i] != s {
		w.idx[i], w.cnt[i] = s, 0
	}
	w.cnt[i]++
}

// count is how many invalid requests the window holds at now.
func (w *invalidWindow) count(now tick) int {
	s := int64(now / w.slot)
	n := 0
	for i := range invalidSlots {
		if d := s - w.idx[i]; d >= 0 && d < invalidSlots {
			n += w.cnt[i]
		}
	}
	return n
}
