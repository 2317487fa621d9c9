package wire

import (
	"encoding/json"
	"fmt"
	"iter"
	"net/url"

	"github.com/shardvisor/shardvisor/internal/secret"
)

// The handoff of a rolling restart. The supervisor starts the replacement
// first, with Welcome.Handoff set, and waits for its Hello (which must say
// Handoff too). Then it sends HandoffRequest to the old process, which
// freezes every shard's connection without closing its session and answers,
// per shard, with HandoffShard messages (the session, then its State
// snapshot in chunks) and one HandoffEnd. The supervisor relays them, as
// they come, to the replacement, which restores each shard's State and
// RESUMEs. If the replacement dies before it is ready, the supervisor sends
// HandoffAbort to the old process, which resumes its own sessions.
//
// Size: a snapshot may be many MiB (a shard of 2,500 large guilds, ~80 MiB
// of gob), more than any one frame may carry: it travels in chunks of at
// most HandoffChunk bytes, in frames of at most MaxHandoff, and a receiver
// accepts at most MaxSnapshot bytes per shard in all.

// Limits of the handoff.
const (
	HandoffChunk = 1 << 20   // snapshot bytes in one HandoffShard
	MaxHandoff   = 2 << 20   // a HandoffShard frame: the chunk in base64 and the session
	MaxSnapshot  = 512 << 20 // one shard's snapshot, all chunks together
	maxSessionID = 256
)

// HandoffRequest [P→C] asks the old process to freeze its shards and hand
// them over.
type HandoffRequest struct{}

// HandoffShard [C→P→C] is one shard's session and a chunk of its State
// snapshot. The first message of a shard carries the session; those after
// it (while More was set) only Shard and Snapshot. SessionID is as secret
// as the token: it prints as "[redacted]", and the message's own Format
// shows neither it nor the snapshot.
type HandoffShard struct {
	Shard int
	// SessionID is empty when the shard has no session to hand over
	// (Reason says why); the replacement IDENTIFYs it.
	SessionID secret.Token
	Seq       int64  // the last sequence number the old process dispatched
	ResumeURL string // READY's resume_gateway_url
	Reason    string
	Snapshot  []byte // a chunk of the gob-encoded State
	More      bool   // more chunks of this shard follow
}

// HandoffEnd [C→P→C] ends a handoff: Shards were sent. A non-empty Reason
// means the old process could not freeze and goes on serving.
type HandoffEnd struct {
	Shards int    `json:"shards"`
	Reason string `json:"reason,omitempty"`
}

// HandoffAbort [P→C] tells a frozen old process that its replacement
// failed: resume your own sessions and go on serving.
type HandoffAbort struct {
	Reason string `json:"reason"`
}

func (*HandoffRequest) Type() Type { return TypeHandoffRequest }
func (*HandoffShard) Type() Type   { return TypeHandoffShard }
func (*HandoffEnd) Type() Type     { return TypeHandoffEnd }
func (*HandoffAbort) Type() Type   { return TypeHandoffAbort }

func (m *HandoffRequest) Validate() error { return nil }

func (m *HandoffShard) Validate() error {
	if err := checkShard(m.Shard); err != nil {
		return err
	}
	if len(m.SessionID.Reveal()) > maxSessionID {
		return fmt.Errorf("session id of %d bytes", len(m.SessionID.Reveal()))
	}
	if m.Seq < 0 {
		return fmt.Errorf("shard %d: negative sequence number", m.Shard)
	}
	if len(m.Snapshot) > HandoffChunk {
		return fmt.Errorf("shard %d: snapshot chunk of %d bytes exceeds %d", m.Shard, len(m.Snapshot), HandoffChunk)
	}
	if len(m.Reason) > maxText || len(m.ResumeURL) > maxText {
		return fmt.Errorf("shard %d: reason or resume url too long", m.Shard)
	}
	if m.ResumeURL != "" {
		u, err := url.Parse(m.ResumeURL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("shard %d: resume url is not a ws:// or wss:// url", m.Shard)
		}
	}
	return nil
}

func (m *HandoffEnd) Validate() error {
	if m.Shards < 0 || m.Shards > MaxShardsInMsg {
		return fmt.Errorf("%d shards handed over", m.Shards)
	}
	if len(m.Reason) > maxText {
		return fmt.Errorf("reason of %d bytes", len(m.Reason))
	}
	return nil
}

func (m *HandoffAbort) Validate() error {
	if len(m.Reason) > maxText {
		return fmt.Errorf("reason of %d bytes", len(m.Reason))
	}
	return nil
}

// Chunks cuts m, whose Snapshot is whole, into the messages that carry it:
// the first with the session, each with at most HandoffChunk snapshot
// bytes, More set on all but the last. Each is a new message, sharing m's
// snapshot; m is not changed.
func (m *HandoffShard) Chunks() iter.Seq[*HandoffShard] {
	return func(yield func(*HandoffShard) bool) {
		snap := m.Snapshot
		for first := true; first || len(snap) > 0; first = false {
			c := &HandoffShard{Shard: m.Shard}
			if first {
				*c = *m
			}
			n := min(len(snap), HandoffChunk)
			c.Snapshot, c.More = snap[:n], n < len(snap)
			snap = snap[n:]
			if !yield(c) {
				return
			}
		}
	}
}

// Format prints the shard and the sizes, never the session id or the
// snapshot, whatever the verb.
func (m *HandoffShard) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "handoff of shard %d (session %t, seq %d, %d snapshot bytes, more %t)",
		m.Shard, !m.SessionID.Empty(), m.Seq, len(m.Snapshot), m.More)
}

// handoffShardWire is HandoffShard as it travels: the only place its
// session id is revealed.
type handoffShardWire struct {
	Shard     int    `json:"shard"`
	SessionID string `json:"session_id,omitempty"`
	Seq       int64  `json:"seq,omitempty"`
	ResumeURL string `json:"resume_url,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Snapshot  []byte `json:"snapshot,omitempty"`
	More      bool   `json:"more,omitempty"`
}

func (m *HandoffShard) MarshalJSON() ([]byte, error) {
	return json.Marshal(handoffShardWire{Shard: m.Shard, SessionID: m.SessionID.Reveal(), Seq: m.Seq,
		ResumeURL: m.ResumeURL, Reason: m.Reason, Snapshot: m.Snapshot, More: m.More})
}

func (m *HandoffShard) UnmarshalJSON(b []byte) error {
	var w handoffShardWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*m = HandoffShard{Shard: w.Shard, Seq: w.Seq, ResumeURL: w.ResumeURL, Reason: w.Reason, Snapshot: w.Snapshot, More: w.More}
	if w.SessionID != "" {
		id, err := secret.NewToken(w.SessionID)
		if err != nil {
			return fmt.Errorf("session id: %w", err)
		}
		if id.Reveal() != w.SessionID {
			return fmt.Errorf("session id: not in its normal form")
		}
		m.SessionID = id
	}
	return nil
}
