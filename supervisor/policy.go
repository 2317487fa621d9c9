package supervisor

import (
	"fmt"
	"syscall"
	"time"

	"github.com/shardvisor/shardvisor/internal/field"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Exit describes how a cluster process ended.
type Exit struct {
	// PID is the process's id (0 if it never started).
	PID int
	// Code is the exit status, or -1 if the process was killed by a signal.
	Code int
	// Signal is the signal that killed it, or 0.
	Signal syscall.Signal
	// Uptime is how long it ran.
	Uptime time.Duration
	// Reason is why it ended, from the supervisor's point of view.
	Reason Reason
}

func (e Exit) String() string {
	if e.Signal != 0 {
		return "signal " + e.Signal.String()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Reason says why a cluster process ended or was restarted. Its values are
// the reason label of shardvisor_cluster_restarts_total.
type Reason string

const (
	ReasonExit     Reason = "exit"     // it exited by itself
	ReasonSignal   Reason = "signal"   // a signal the supervisor did not send killed it
	ReasonWatchdog Reason = "watchdog" // it went silent on its channel and was killed
	ReasonProtocol Reason = "protocol" // it broke the channel protocol and was cut off
	ReasonRolling  Reason = "rolling"  // a rolling restart (SIGHUP) replaced it
	ReasonStop     Reason = "stop"     // the supervisor is stopping
)

// Reasons lists the restart reasons, for metrics.
var Reasons = [...]Reason{ReasonExit, ReasonSignal, ReasonWatchdog, ReasonProtocol, ReasonRolling}

// RestartPolicy decides what happens after a cluster process ends on its own.
type RestartPolicy struct {
	// Delay is the first restart delay; it doubles with each consecutive
	// failure up to MaxDelay.
	Delay, MaxDelay time.Duration
	// Stable is how long a process must have run for the delay to start
	// again from Delay.
	Stable time.Duration
	// Jitter spreads each delay by ± this fraction, so that clusters that
	// failed together do not all come back at the same moment.
	Jitter float64
	// MaxRestarts, if positive, is how many restarts of one cluster Window
	// may hold; one more and the supervisor gives up (like Erlang's
	// MaxR in MaxT).
	MaxRestarts int
	Window      time.Duration
}

// DefaultRestartPolicy is the production policy: the command line's
// defaults.
func DefaultRestartPolicy() RestartPolicy {
	return RestartPolicy{Delay: time.Second, MaxDelay: 5 * time.Minute, Stable: 2 * time.Minute, Jitter: 0.2, Window: 10 * time.Minute}
}

// Fields of RestartPolicy, as its errors name them (see package field).
const (
	fieldDelay       = "RestartPolicy.Delay"
	fieldMaxDelay    = "RestartPolicy.MaxDelay"
	fieldStable      = "RestartPolicy.Stable"
	fieldJitter      = "RestartPolicy.Jitter"
	fieldMaxRestarts = "RestartPolicy.MaxRestarts"
	fieldWindow      = "RestartPolicy.Window"
)

// Validate reports settings that cannot work as a *field.Error naming the
// field.
func (p RestartPolicy) Validate() error {
	switch {
	case p.Delay <= 0:
		return field.New(fieldDelay, fmt.Sprintf("%v, must be positive", p.Delay))
	case p.MaxDelay < p.Delay:
		return field.New(fieldMaxDelay, fmt.Sprintf("%v is less than %s %v", p.MaxDelay, fieldDelay, p.Delay), fieldDelay)
	case p.Stable <= 0:
		return field.New(fieldStable, fmt.Sprintf("%v, must be positive", p.Stable))
	case p.Jitter < 0 || p.Jitter >= 1:
		return field.New(fieldJitter, fmt.Sprintf("%v, must be in [0, 1)", p.Jitter))
	case p.MaxRestarts < 0:
		return field.New(fieldMaxRestarts, fmt.Sprintf("%d, must not be negative", p.MaxRestarts))
	case p.MaxRestarts > 0 && p.Window <= 0:
		return field.New(fieldWindow, fmt.Sprintf("%v, must be positive when %s is set", p.Window, fieldMaxRestarts), fieldMaxRestarts)
	}
	return nil
}

// Action is what to do after an exit.
type Action int

const (
	ActionRestart       Action = iota // start it again after Delay
	ActionStopFatal                   // stop everything, exit 78
	ActionStopIntensity               // stop everything, exit 1
)

// Decision is the policy's answer.
type Decision struct {
	Action Action
	Delay  time.Duration
}

// History is what the policy remembers of one cluster.
type History struct {
	failures int         // consecutive failures since the last stable run
	restarts []time.Time // restart times within the window
}

// maxBudgetDelay caps a restart delay stretched by a low session budget.
const maxBudgetDelay = time.Hour

// Decide records exit in h and returns what to do. rnd is a uniform random
// number in [0, 1) for the jitter; budgetFactor (≥ 1) stretches the delay
// when Discord's session start budget runs low.
func (p RestartPolicy) Decide(h *History, exit Exit, now time.Time, rnd, budgetFactor float64) Decision {
	if exit.Code == wire.ExitConfig {
		return Decision{Action: ActionStopFatal}
	}
	if p.MaxRestarts > 0 {
		keep := h.restarts[:0]
		for _, t := range h.restarts {
			if now.Sub(t) < p.Window {
				keep = append(keep, t)
			}
		}
		h.restarts = append(keep, now)
		if len(h.restarts) > p.MaxRestarts {
			return Decision{Action: ActionStopIntensity}
		}
	}
	if exit.Uptime >= p.Stable {
		h.failures = 0
	}
	d := p.Delay
	for i := 0; i < h.failures && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	h.failures++
	d = time.Duration(float64(d) * (1 + p.Jitter*(2*rnd-1)))
	d = min(d, p.MaxDelay)
	if budgetFactor > 1 {
		d = min(time.Duration(float64(d)*budgetFactor), max(p.MaxDelay, maxBudgetDelay))
	}
	return Decision{Action: ActionRestart, Delay: d}
}
