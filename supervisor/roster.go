package supervisor

import (
	"slices"
	"sync"
	"sync/atomic"
)

// roster is one plan's clusters under supervision: the live fleet, which
// serves the bot; during a reshard the next fleet, in shadow (its
// processes connect and cache but call no handler); and after a reshard's
// switch the old fleet, on its way out. The supervisor's main loop counts
// every runner of every roster; only the live roster's failures stop the
// supervisor (reshard.go).
type roster struct {
	plan    Plan
	runners []*runner
	set     *statusSet // its statuses in the Store

	// shadow is true until the fleet goes live; it is read when a process
	// starts, so that a shadow process restarted after the switch starts
	// live.
	shadow atomic.Bool

	stopOnce sync.Once
	stopping chan struct{} // closed when its processes must stop: the supervisor's stop, or retired
	// failed receives the first error of a runner of a roster that is not
	// live (a shadow fleet that cannot start): the reshard gives up.
	failed chan error
}

func newRoster(s *Supervisor, p Plan, set *statusSet, shadow bool) *roster {
	ro := &roster{plan: p, set: set, stopping: make(chan struct{}), failed: make(chan error, 1)}
	ro.shadow.Store(shadow)
	for _, c := range p.Clusters {
		ro.runners = append(ro.runners, newRunner(s, ro, c))
	}
	return ro
}

// stop makes every runner of the roster stop its process; it does not wait.
func (ro *roster) stop() { ro.stopOnce.Do(func() { close(ro.stopping) }) }

func (ro *roster) isStopping() bool { return closed(ro.stopping) }

// fail reports a runner's error to the reshard, the first one only.
func (ro *roster) fail(err error) {
	select {
	case ro.failed <- err:
	default:
	}
}

// givingUp says, for the logs, what a runner's unrecoverable error does:
// stop everything (the live fleet), or abandon the reshard (the next one).
func (ro *roster) givingUp() string {
	if ro.shadow.Load() {
		return "abandoning the reshard"
	}
	return "stopping everything"
}

// runnerDone is a runner's end, for the main loop.
type runnerDone struct {
	ro  *roster
	err error
}

// live is the roster that serves the bot.
func (s *Supervisor) live() *roster { return s.liveRoster.Load() }

// addRoster counts ro among the rosters that a stop stops and has the
// main loop run its runners; false when the supervisor stops already.
func (s *Supervisor) addRoster(ro *roster) bool {
	s.rosterMu.Lock()
	if s.isStopping() {
		s.rosterMu.Unlock()
		return false
	}
	// Those retired or abandoned are stopped already: a stop need not.
	s.rosters = append(slices.DeleteFunc(s.rosters, (*roster).isStopping), ro)
	s.rosterMu.Unlock()
	// The main loop ends only once every runner it counts is done, which
	// is after a stop; then these are not run (a stop stopped them).
	select {
	case s.spawn <- ro:
		return true
	case <-s.loopDone:
		return false
	}
}

// stopRosters stops every roster; with the supervisor's stopping closed
// under the same lock, no roster is added after it.
func (s *Supervisor) stopRosters() {
	s.rosterMu.Lock()
	defer s.rosterMu.Unlock()
	close(s.stopping)
	for _, ro := range s.rosters {
		ro.stop()
	}
}
