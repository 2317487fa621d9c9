package wire

import (
	"time"

	"golang.org/x/sys/unix"
)

// Mono reads CLOCK_MONOTONIC, in nanoseconds. Unlike the wall clock it never
// jumps, and unlike Go's own monotonic readings it is the same clock in
// every process on the machine (a cluster shares its supervisor's time
// namespace): the two ends of the channel use it to tell each other when
// things happen, without the channel's latency in between.
func Mono() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// maxMonoSkew bounds how far a Mono reading from the peer is trusted to be
// from now; beyond it (which a shared clock cannot produce) the local
// receipt time is used instead.
const maxMonoSkew = 10 * time.Second

// MonoTime converts a Mono reading, from this process or the peer, to a
// time.Time on this process's clock. 0, and readings further than a few
// seconds from now, give now.
func MonoTime(mono int64) time.Time {
	now := time.Now()
	if mono == 0 {
		return now
	}
	d := time.Duration(mono - Mono())
	if d > maxMonoSkew || d < -maxMonoSkew {
		return now
	}
	return now.Add(d)
}
