package wire

import (
	"encoding/json"
	"fmt"
	"time"
)

// Fleet calls: named requests between clusters, routed by the supervisor.
//
//	caller ──FleetCall──▶ supervisor ──FleetRequest──▶ target (one or every cluster)
//	caller ◀─FleetAnswer── supervisor ◀──FleetReply─── target
//
// The supervisor answers every call: one FleetAnswer per cluster it was
// routed to (Of says how many), each with the cluster's data or an error
// code; when the call as a whole is refused, a single answer with Cluster
// -1. Calls and answers are not counted against the channel's flood limit:
// the supervisor bounds them by the calls each cluster may have in flight.

// Limits of fleet calls.
const (
	MaxFleetName        = 100
	MaxFleetRequestData = 256 << 10 // a call's request, as JSON
	MaxFleetAnswerData  = 1 << 20   // one cluster's answer, as JSON
	MaxFleetTimeout     = time.Minute
	MaxFleetError       = maxText // an error's text
	maxFleetEnvelope    = 8 << 10 // name, error text and the other fields
)

// FleetCode says why a fleet call, or one cluster's part of it, failed. The
// empty code is success.
type FleetCode string

// Fleet error codes.
const (
	FleetOK          FleetCode = ""
	FleetUnavailable FleetCode = "unavailable"     // down, restarting, not ready, or run by another supervisor
	FleetNoSuchName  FleetCode = "no_such_request" // the cluster serves no request of that name
	FleetBusy        FleetCode = "busy"            // too many calls in flight from the caller or to the target
	FleetTooLarge    FleetCode = "too_large"       // the request or the answer exceeds its limit
	FleetPanic       FleetCode = "panic"           // the handler panicked; the cluster carries on
	FleetError       FleetCode = "error"           // the handler returned an error
	FleetDeadline    FleetCode = "deadline"        // no answer within the call's deadline
	FleetBadRequest  FleetCode = "bad_request"     // the call names no cluster of the plan, or is malformed
)

var fleetCodes = map[FleetCode]bool{FleetOK: true, FleetUnavailable: true, FleetNoSuchName: true, FleetBusy: true,
	FleetTooLarge: true, FleetPanic: true, FleetError: true, FleetDeadline: true, FleetBadRequest: true}

// Fleet call targets (FleetCall.To).
const (
	ToCluster = "cluster" // FleetCall.Cluster
	ToGuild   = "guild"   // the cluster that has shard (Guild >> 22) % shard count
	ToAll     = "all"     // every cluster of the plan
)

// FleetCall [C→P] asks the supervisor to route a named request. ID is the
// caller's, echoed in the answers.
type FleetCall struct {
	ID      uint64          `json:"id"`
	Name    string          `json:"name"`
	To      string          `json:"to"`
	Cluster int             `json:"cluster,omitempty"`
	Guild   uint64          `json:"guild,omitempty"`
	Timeout time.Duration   `json:"timeout_ns"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// FleetRequest [P→C] is one cluster's part of a call. ID is the supervisor's,
// echoed in the reply; Timeout is what is left of the caller's deadline.
type FleetRequest struct {
	ID      uint64          `json:"id"`
	Name    string          `json:"name"`
	Timeout time.Duration   `json:"timeout_ns"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// FleetReply [C→P] is a cluster's answer to a FleetRequest.
type FleetReply struct {
	ID    uint64          `json:"id"`
	Code  FleetCode       `json:"code,omitempty"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// FleetAnswer [P→C] is one cluster's answer to a FleetCall, or, with Cluster
// -1, the refusal of the whole call.
type FleetAnswer struct {
	ID      uint64          `json:"id"`
	Cluster int             `json:"cluster"`
	Of      int             `json:"of"` // answers the call gets in all
	Code    FleetCode       `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (*FleetCall) Type() Type    { return TypeFleetCall }
func (*FleetRequest) Type() Type { return TypeFleetRequest }
func (*FleetReply) Type() Type   { return TypeFleetReply }
func (*FleetAnswer) Type() Type  { return TypeFleetAnswer }

// CheckFleetName reports a name no fleet request may have: empty, longer
// than MaxFleetName, or with characters other than letters, digits and
// ". _ - : /".
func CheckFleetName(name string) error {
	if name == "" || len(name) > MaxFleetName {
		return fmt.Errorf("fleet request name of %d bytes (1 to %d)", len(name), MaxFleetName)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '_', r == '-', r == ':', r == '/':
		default:
			return fmt.Errorf("fleet request name %q: character %q not allowed", name, r)
		}
	}
	return nil
}

func checkTimeout(d time.Duration) error {
	if d <= 0 || d > MaxFleetTimeout {
		return fmt.Errorf("fleet timeout %v out of range (0 to %v)", d, MaxFleetTimeout)
	}
	return nil
}

func checkOutcome(code FleetCode, msg string, data json.RawMessage) error {
	if !fleetCodes[code] {
		return fmt.Errorf("unknown fleet code %q", code)
	}
	if len(msg) > maxText {
		return fmt.Errorf("fleet error text of %d bytes", len(msg))
	}
	if code == FleetOK && msg != "" {
		return fmt.Errorf("fleet answer with an error text but no code")
	}
	if code != FleetOK && len(data) > 0 {
		return fmt.Errorf("fleet answer with code %q and data", code)
	}
	if len(data) > MaxFleetAnswerData {
		return fmt.Errorf("fleet answer data of %d bytes exceeds the limit of %d", len(data), MaxFleetAnswerData)
	}
	return nil
}

func (m *FleetCall) Validate() error {
	if err := CheckFleetName(m.Name); err != nil {
		return err
	}
	if err := checkTimeout(m.Timeout); err != nil {
		return err
	}
	if len(m.Data) > MaxFleetRequestData {
		return fmt.Errorf("fleet request data of %d bytes exceeds the limit of %d", len(m.Data), MaxFleetRequestData)
	}
	switch m.To {
	case ToCluster:
		if m.Cluster < 0 || m.Cluster > MaxShardID || m.Guild != 0 {
			return fmt.Errorf("fleet call to cluster %d (guild %d)", m.Cluster, m.Guild)
		}
	case ToGuild:
		if m.Guild == 0 || m.Cluster != 0 {
			return fmt.Errorf("fleet call to guild %d (cluster %d)", m.Guild, m.Cluster)
		}
	case ToAll:
		if m.Cluster != 0 || m.Guild != 0 {
			return fmt.Errorf("fleet broadcast naming cluster %d, guild %d", m.Cluster, m.Guild)
		}
	default:
		return fmt.Errorf("fleet call to %q", m.To)
	}
	return nil
}

func (m *FleetRequest) Validate() error {
	if err := CheckFleetName(m.Name); err != nil {
		return err
	}
	if len(m.Data) > MaxFleetRequestData {
		return fmt.Errorf("fleet request data of %d bytes exceeds the limit of %d", len(m.Data), MaxFleetRequestData)
	}
	return checkTimeout(m.Timeout)
}

func (m *FleetReply) Validate() error { return checkOutcome(m.Code, m.Error, m.Data) }

func (m *FleetAnswer) Validate() error {
	if m.Cluster < -1 || m.Cluster > MaxShardID || m.Of < 0 || m.Of > MaxShardID {
		return fmt.Errorf("fleet answer from cluster %d of %d", m.Cluster, m.Of)
	}
	if m.Cluster == -1 && m.Code == FleetOK {
		return fmt.Errorf("fleet refusal without a code")
	}
	return checkOutcome(m.Code, m.Error, m.Data)
}

// newFleetMessage returns an empty fleet message of type t, or nil.
func newFleetMessage(t Type) Message {
	switch t {
	case TypeFleetCall:
		return new(FleetCall)
	case TypeFleetRequest:
		return new(FleetRequest)
	case TypeFleetReply:
		return new(FleetReply)
	case TypeFleetAnswer:
		return new(FleetAnswer)
	}
	return nil
}
