package supervisor

import (
	"slices"
	"time"
)

// eventsKept is how many recent events the store keeps for /status.
const eventsKept = 64

// EventKind says what happened to a cluster.
type EventKind string

const (
	EventRestart EventKind = "restart" // a process ended and another will start
	EventFatal   EventKind = "fatal"   // a fatal exit or close: everything stops
	EventGiveUp  EventKind = "give_up" // restarted too often: everything stops
	EventControl EventKind = "control" // an operator's request over the control socket
	EventReshard EventKind = "reshard" // a reshard began, switched, was abandoned or refused
)

// Event is one entry of the recent events /status shows, newest last. Its
// message is the supervisor's own words: no token, no session id.
type Event struct {
	At        time.Time `json:"at"`
	Kind      EventKind `json:"kind"`
	ClusterID int       `json:"cluster_id"` // -1: not about one cluster
	Message   string    `json:"message"`
}

// events is a ring of the last eventsKept events.
type events struct {
	buf  []Event
	next int // where the next event goes once buf is full
}

func (e *events) add(ev Event) {
	if len(e.buf) < eventsKept {
		e.buf = append(e.buf, ev)
		return
	}
	e.buf[e.next] = ev
	e.next = (e.next + 1) % eventsKept
}

// list returns the events oldest first, as a copy.
func (e *events) list() []Event {
	return slices.Concat(e.buf[e.next:], e.buf[:e.next])
}

// Event records ev (At set to now when zero) among the recent events and
// wakes the store's waiters.
func (s *Store) Event(ev Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events.add(ev)
	close(s.changed)
	s.changed = make(chan struct{})
}
