package wire

import (
	"fmt"
	"time"
)

// One REST rate limit for the whole bot. A child welcomed with RESTTickets
// asks, before each REST request, for a ticket for the request's route
// (its bucket key: method and path with the major parameter kept and other
// ids replaced); the supervisor answers with how long to wait before
// sending, having reserved the slot against the global limit and the
// route's bucket as learned from every cluster's responses. After the
// response the child reports its rate-limit headers, so that the
// supervisor learns the bucket. A child that gets no grant in time sends
// anyway, under its own limiter: the supervisor is never a reason for a
// request to hang.

// Frame types of REST tickets.
const (
	TypeRESTTicket Type = 19 // [C→P] may this request go, and when?
	TypeRESTGrant  Type = 20 // [P→C] yes, after Wait
	TypeRESTReport Type = 21 // [C→P] what the response said of its limits
)

// MaxRESTKey bounds a route key: a method and a path with its major
// parameter (a webhook token is the longest, ~70 characters).
const MaxRESTKey = 512

// maxRESTWait bounds the waits and resets a message may carry: Discord's
// longest buckets reset in hours, not days.
const maxRESTWait = 24 * time.Hour

// RESTTicket asks for a slot for one request on the route Key.
type RESTTicket struct {
	ID  uint64 `json:"id"`
	Key string `json:"key"`
}

// RESTGrant answers the ticket ID: send after Wait.
type RESTGrant struct {
	ID   uint64        `json:"id"`
	Wait time.Duration `json:"wait_ns,omitempty"`
}

// RESTReport is what a response on the route Key said: its status (0 when
// the request got no response) and rate-limit headers.
type RESTReport struct {
	Key        string        `json:"key"`
	Status     int           `json:"status"`
	Bucket     string        `json:"bucket,omitempty"`
	Limit      int           `json:"limit,omitempty"`
	Remaining  int           `json:"remaining,omitempty"`
	ResetAfter time.Duration `json:"reset_after_ns,omitempty"`
	RetryAfter time.Duration `json:"retry_after_ns,omitempty"`
	Global     bool          `json:"global,omitempty"`
	Scope      string        `json:"scope,omitempty"`
}

func (*RESTTicket) Type() Type { return TypeRESTTicket }
func (*RESTGrant) Type() Type  { return TypeRESTGrant }
func (*RESTReport) Type() Type { return TypeRESTReport }

func checkRESTKey(k string) error {
	if k == "" || len(k) > MaxRESTKey {
		return fmt.Errorf("route key of %d bytes", len(k))
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x21 && c != ' ' || c == 0x7f {
			return fmt.Errorf("route key with control byte %#x", c)
		}
	}
	return nil
}

func (m *RESTTicket) Validate() error { return checkRESTKey(m.Key) }

func (m *RESTGrant) Validate() error {
	if m.Wait < 0 || m.Wait > maxRESTWait {
		return fmt.Errorf("grant wait %v", m.Wait)
	}
	return nil
}

func (m *RESTReport) Validate() error {
	if err := checkRESTKey(m.Key); err != nil {
		return err
	}
	switch {
	case m.Status != 0 && (m.Status < 100 || m.Status > 599):
		return fmt.Errorf("status %d", m.Status)
	case len(m.Bucket) > 128 || len(m.Scope) > 32:
		return fmt.Errorf("bucket or scope too long")
	case m.Limit < 0 || m.Remaining < 0 || m.Remaining > 1<<30 || m.Limit > 1<<30:
		return fmt.Errorf("limit %d, remaining %d", m.Limit, m.Remaining)
	case m.ResetAfter < 0 || m.ResetAfter > maxRESTWait || m.RetryAfter < 0 || m.RetryAfter > maxRESTWait:
		return fmt.Errorf("reset after %v, retry after %v", m.ResetAfter, m.RetryAfter)
	}
	return nil
}

// newRESTMessage returns an empty REST message of type t, or nil.
func newRESTMessage(t Type) Message {
	switch t {
	case TypeRESTTicket:
		return new(RESTTicket)
	case TypeRESTGrant:
		return new(RESTGrant)
	case TypeRESTReport:
		return new(RESTReport)
	}
	return nil
}
