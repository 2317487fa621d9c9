// Package wire is the private channel between the supervisor and each cluster
// process: one end of a socketpair, passed to the child as fd 3.
//
// A frame is a 6-byte header (protocol version, message type, big-endian
// payload length) and a payload: JSON for every message but the metrics
// response, whose payload is an 8-byte request id and Prometheus'
// length-delimited protobuf. Each type has its own size limit, checked before
// anything is read or allocated, so a broken or hostile peer costs at most
// one frame's limit of memory.
//
// Compatibility: adding a JSON field is compatible (unknown fields are
// ignored); a new message type or a changed meaning takes a new Version.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version this build speaks.
const Version = 1

// HeaderSize is the size of a frame header.
const HeaderSize = 6

// Type says what a frame carries.
type Type uint8

// Message types. Direction in brackets: P is the supervisor, C the cluster.
const (
	TypeHello           Type = 1 // [C→P] first message: who the child is
	TypeWelcome         Type = 2 // [P→C] first message: the token and settings
	TypeStatus          Type = 3 // [C→P] shard states, at least every second: also the liveness signal
	TypeIdentifyRequest Type = 4 // [C→P] a shard wants to send IDENTIFY
	TypeIdentifyGrant   Type = 5 // [P→C] it may, after a delay
	TypeIdentifyDone    Type = 6 // [C→P] the IDENTIFY was sent, or will not be
	TypeMetricsRequest  Type = 7 // [P→C] send your metrics
	TypeMetrics         Type = 8 // [C→P] metrics (binary payload)
	TypeFatal           Type = 9 // [C→P] a fatal gateway close: the child exits 78 next
	// The handoff of a rolling restart (handoff.go).
	TypeHandoffRequest Type = 10 // [P→C] freeze your shards and hand them over
	TypeHandoffShard   Type = 11 // [C→P→C] one shard's session and a chunk of its State
	TypeHandoffEnd     Type = 12 // [C→P→C] every shard handed over, or why not
	TypeHandoffAbort   Type = 13 // [P→C] the replacement failed: resume your own sessions
)

// Fleet call message types (fleet.go).
const (
	TypeFleetCall    Type = 14 // [C→P] route a named request to one or every cluster
	TypeFleetRequest Type = 15 // [P→C] a cluster's part of a fleet call
	TypeFleetReply   Type = 16 // [C→P] its answer
	TypeFleetAnswer  Type = 17 // [P→C] one cluster's answer, to the caller
)

var typeNames = [...]string{
	TypeHello: "hello", TypeWelcome: "welcome", TypeStatus: "status",
	TypeIdentifyRequest: "identify-request", TypeIdentifyGrant: "identify-grant",
	TypeIdentifyDone: "identify-done", TypeMetricsRequest: "metrics-request",
	TypeMetrics: "metrics", TypeFatal: "fatal",
	TypeFleetCall: "fleet-call", TypeFleetRequest: "fleet-request",
	TypeFleetReply: "fleet-reply", TypeFleetAnswer: "fleet-answer",
	TypeHandoffRequest: "handoff-request", TypeHandoffShard: "handoff-shard",
	TypeHandoffEnd: "handoff-end", TypeHandoffAbort: "handoff-abort",
	TypeSessionCheckpoint: "session-checkpoint",
	TypeRESTTicket:        "rest-ticket", TypeRESTGrant: "rest-grant", TypeRESTReport: "rest-report",
	TypeLive: "live",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Size limits per type, for the payload.
const (
	MaxSmall   = 4 << 10  // control messages
	MaxStatus  = 1 << 20  // a status report: ~150 bytes per shard
	MaxMetrics = 32 << 20 // a cluster's metrics
)

// MaxPayload returns the largest payload a frame of type t may carry, or 0
// for a type this version does not know.
func MaxPayload(t Type) int {
	switch t {
	case TypeHello, TypeWelcome, TypeIdentifyRequest, TypeIdentifyGrant,
		TypeIdentifyDone, TypeMetricsRequest, TypeFatal,
		TypeHandoffRequest, TypeHandoffEnd, TypeHandoffAbort,
		TypeRESTTicket, TypeRESTGrant, TypeRESTReport, TypeLive:
		return MaxSmall
	case TypeHandoffShard:
		return MaxHandoff
	case TypeStatus:
		return MaxStatus
	case TypeSessionCheckpoint:
		return MaxCheckpoint
	case TypeMetrics:
		return MaxMetrics
	case TypeFleetCall, TypeFleetRequest:
		return MaxFleetRequestData + maxFleetEnvelope
	case TypeFleetReply, TypeFleetAnswer:
		return MaxFleetAnswerData + maxFleetEnvelope
	}
	return 0
}

// ErrProtocol is wrapped by every error that means the peer broke the
// protocol (as opposed to an I/O error or a clean EOF).
var ErrProtocol = errors.New("protocol violation")

// Header is a decoded frame header.
type Header struct {
	Version uint8
	Type    Type
	Length  uint32
}

// ParseHeader decodes and checks a frame header.
func ParseHeader(b [HeaderSize]byte) (Header, error) {
	h := Header{Version: b[0], Type: Type(b[1]), Length: binary.BigEndian.Uint32(b[2:])}
	if h.Version != Version {
		return h, fmt.Errorf("%w: protocol version %d, this build speaks %d", ErrProtocol, h.Version, Version)
	}
	limit := MaxPayload(h.Type)
	if limit == 0 {
		return h, fmt.Errorf("%w: unknown message type %d", ErrProtocol, uint8(h.Type))
	}
	if int64(h.Length) > int64(limit) {
		return h, fmt.Errorf("%w: %s frame of %d bytes exceeds the limit of %d", ErrProtocol, h.Type, h.Length, limit)
	}
	return h, nil
}

// ReadFrame reads one frame from r. A clean EOF before a header is io.EOF;
// a frame cut short is io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader) (Type, []byte, error) {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return 0, nil, err
	}
	h, err := ParseHeader(hb)
	if err != nil {
		return 0, nil, err
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read %s frame: %w", h.Type, err)
	}
	return h.Type, payload, nil
}

// AppendFrame appends a frame of type t with payload p to dst.
func AppendFrame(dst []byte, t Type, p []byte) ([]byte, error) {
	if limit := MaxPayload(t); limit == 0 || len(p) > limit {
		return dst, fmt.Errorf("write %s frame: %d bytes exceeds the limit of %d", t, len(p), limit)
	}
	dst = append(dst, Version, byte(t), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(p)))
	return append(dst, p...), nil
}
