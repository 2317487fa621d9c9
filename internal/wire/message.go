package wire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
)

// Message is one typed message of the protocol.
type Message interface {
	// Type is the frame type that carries the message.
	Type() Type
	// Validate reports values no peer of this version may send.
	Validate() error
}

// Limits on values inside messages.
const (
	MaxShardID     = 1 << 20 // far beyond any bot: Discord's largest use tens of thousands
	MaxShardsInMsg = 4096
	maxText        = 1024
)

// Hello is the child's first message.
type Hello struct {
	ClusterID int    `json:"cluster_id"`
	PID       int    `json:"pid"`
	ShardIDs  []int  `json:"shard_ids"`
	Build     string `json:"build,omitempty"` // the child binary's version
	// Handoff says that the child takes part in a rolling restart's
	// handoff (handoff.go): it can hand its shards over, and it waited for
	// them if its Welcome said Handoff.
	Handoff bool `json:"handoff,omitempty"`
	// Shadow says that the child honours Welcome.Shadow and Live
	// (reshard.go): a child that does not would call its handlers beside
	// the live fleet's, and take a Live for a protocol violation.
	Shadow bool `json:"shadow,omitempty"`
}

// Welcome is the supervisor's first message: what the child needs and must
// not take from its environment.
type Welcome struct {
	Token secret.Token `json:"-"`
	// Fleet says the supervisor routes fleet calls (fleet.go): a cluster
	// must not send them to one that does not, an older version that
	// would take them for a protocol violation.
	Fleet bool `json:"-"`
	// Handoff tells a replacement to connect no shard before the handoff
	// of its predecessor ends (HandoffEnd), and to RESUME those handed over.
	Handoff bool `json:"-"`
	// HandoffCause says why (the Cause constants of checkpoint.go); empty
	// with Handoff means a rolling restart.
	HandoffCause string `json:"-"`
	// Checkpoint asks the child to report its sessions (checkpoint.go) so
	// that a crash can be resumed from.
	Checkpoint bool `json:"-"`
	// RESTTickets asks the child to take a ticket from the supervisor
	// before each REST request (rest.go): one rate limit for the bot.
	RESTTickets bool `json:"-"`
	// Shadow starts the child in shadow, for a reshard (reshard.go): it
	// connects its shards and keeps their State, but calls none of the
	// bot's handlers and answers no interaction until Live.
	Shadow bool `json:"-"`
}

// ShardState is where a shard's gateway connection stands.
type ShardState string

// Shard states, in the order a shard normally goes through them.
const (
	ShardQueued      ShardState = "queued"      // waiting for an identify grant
	ShardConnecting  ShardState = "connecting"  // dialling, waiting for HELLO
	ShardIdentifying ShardState = "identifying" // IDENTIFY sent; waiting for READY and its guilds
	ShardResuming    ShardState = "resuming"    // RESUME sent; waiting for RESUMED
	ShardReady       ShardState = "ready"       // receiving events
	ShardDown        ShardState = "down"        // disconnected, waiting to reconnect, or stopped
)

// ShardStates lists every state, for metrics and tables.
var ShardStates = [...]ShardState{ShardQueued, ShardConnecting, ShardIdentifying, ShardResuming, ShardReady, ShardDown}

// Valid reports whether s is one of the states above.
func (s ShardState) Valid() bool {
	for _, v := range ShardStates {
		if s == v {
			return true
		}
	}
	return false
}

// ShardStatus is one shard's report.
type ShardStatus struct {
	ID      int           `json:"id"`
	State   ShardState    `json:"state"`
	Since   time.Time     `json:"since"`                // when it entered State
	Latency time.Duration `json:"latency_ns,omitempty"` // last heartbeat round trip
	Guilds  int           `json:"guilds"`
	// LastIdentify is when the shard last sent IDENTIFY (zero: never in this process).
	LastIdentify time.Time `json:"last_identify,omitzero"`
}

// Status is the child's periodic report, sent at least once a second.
type Status struct {
	Shards []ShardStatus `json:"shards"`
}

// IdentifyRequest asks for permission to send IDENTIFY for Shard. Seq is the
// child's own request number, echoed in the grant.
type IdentifyRequest struct {
	Shard int    `json:"shard"`
	Seq   uint64 `json:"seq"`
}

// IdentifyGrant allows Shard to send IDENTIFY once Delay has passed after the
// grant was received, or, when NotBefore (a Mono reading) is set, from then.
type IdentifyGrant struct {
	Shard     int           `json:"shard"`
	Seq       uint64        `json:"seq"`
	Delay     time.Duration `json:"delay_ns"`
	NotBefore int64         `json:"not_before_mono,omitempty"`
}

// IdentifyDone closes a grant: the IDENTIFY was sent (Sent), at SentAt (a
// Mono reading taken as the frame left), or the shard gave the grant up
// without sending it.
type IdentifyDone struct {
	Shard  int    `json:"shard"`
	Seq    uint64 `json:"seq"`
	Sent   bool   `json:"sent"`
	SentAt int64  `json:"sent_mono,omitempty"`
}

// MetricsRequest asks for the child's metrics; ID is echoed in the answer.
type MetricsRequest struct {
	ID uint64 `json:"id"`
}

// Metrics answers a MetricsRequest with Prometheus' length-delimited protobuf
// exposition (expfmt.TypeProtoDelim). Its payload is binary, not JSON.
type Metrics struct {
	ID   uint64
	Data []byte
}

// Fatal tells the supervisor that a shard met a close code that no restart can
// cure; the child exits with status 78 right after.
type Fatal struct {
	Shard  int    `json:"shard"`
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

func (*Hello) Type() Type           { return TypeHello }
func (*Welcome) Type() Type         { return TypeWelcome }
func (*Status) Type() Type          { return TypeStatus }
func (*IdentifyRequest) Type() Type { return TypeIdentifyRequest }
func (*IdentifyGrant) Type() Type   { return TypeIdentifyGrant }
func (*IdentifyDone) Type() Type    { return TypeIdentifyDone }
func (*MetricsRequest) Type() Type  { return TypeMetricsRequest }
func (*Metrics) Type() Type         { return TypeMetrics }
func (*Fatal) Type() Type           { return TypeFatal }

func checkShard(id int) error {
	if id < 0 || id > MaxShardID {
		return fmt.Errorf("shard id %d out of range", id)
	}
	return nil
}

func (m *Hello) Validate() error {
	if m.ClusterID < 0 || m.ClusterID > MaxShardID {
		return fmt.Errorf("cluster id %d out of range", m.ClusterID)
	}
	if m.PID <= 0 {
		return fmt.Errorf("pid %d out of range", m.PID)
	}
	if len(m.ShardIDs) == 0 || len(m.ShardIDs) > MaxShardsInMsg {
		return fmt.Errorf("%d shard ids", len(m.ShardIDs))
	}
	for _, id := range m.ShardIDs {
		if err := checkShard(id); err != nil {
			return err
		}
	}
	if len(m.Build) > maxText {
		return fmt.Errorf("build string of %d bytes", len(m.Build))
	}
	return nil
}

func (m *Welcome) Validate() error {
	if m.Token.Empty() {
		return fmt.Errorf("no token")
	}
	switch m.HandoffCause {
	case "", CauseRollingRestart, CauseCrash, CauseSupervisorRestart:
	default:
		return fmt.Errorf("unknown handoff cause %q", m.HandoffCause)
	}
	return nil
}

// welcomeWire is Welcome as it travels: the only place the token is revealed.
type welcomeWire struct {
	Token   string `json:"token"`
	Fleet   bool   `json:"fleet,omitempty"`
	Handoff bool   `json:"handoff,omitempty"`
	Cause   string `json:"handoff_cause,omitempty"`
	Check   bool   `json:"checkpoint,omitempty"`
	REST    bool   `json:"rest_tickets,omitempty"`
	Shadow  bool   `json:"shadow,omitempty"`
}

func (m *Welcome) MarshalJSON() ([]byte, error) {
	return json.Marshal(welcomeWire{Token: m.Token.Reveal(), Fleet: m.Fleet, Handoff: m.Handoff,
		Cause: m.HandoffCause, Check: m.Checkpoint, REST: m.RESTTickets, Shadow: m.Shadow})
}

func (m *Welcome) UnmarshalJSON(b []byte) error {
	var w welcomeWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	m.Token, m.Fleet, m.Handoff = secret.Token{}, w.Fleet, w.Handoff
	m.HandoffCause, m.Checkpoint, m.RESTTickets, m.Shadow = w.Cause, w.Check, w.REST, w.Shadow
	if w.Token != "" {
		t, err := secret.NewToken(w.Token)
		if err != nil {
			return err
		}
		m.Token = t
	}
	return nil
}

func (m *Status) Validate() error {
	if len(m.Shards) > MaxShardsInMsg {
		return fmt.Errorf("%d shards", len(m.Shards))
	}
	for _, s := range m.Shards {
		if err := checkShard(s.ID); err != nil {
			return err
		}
		if !s.State.Valid() {
			return fmt.Errorf("shard %d: unknown state %q", s.ID, s.State)
		}
		if s.Guilds < 0 || s.Latency < 0 {
			return fmt.Errorf("shard %d: negative guilds or latency", s.ID)
		}
	}
	return nil
}

func (m *IdentifyRequest) Validate() error { return checkShard(m.Shard) }
func (m *IdentifyDone) Validate() error    { return checkShard(m.Shard) }
func (m *MetricsRequest) Validate() error  { return nil }
func (m *Metrics) Validate() error         { return nil }

func (m *IdentifyGrant) Validate() error {
	if m.Delay < 0 || m.Delay > 24*time.Hour {
		return fmt.Errorf("grant delay %v out of range", m.Delay)
	}
	return checkShard(m.Shard)
}

func (m *Fatal) Validate() error {
	if m.Code < 1000 || m.Code > 4999 {
		return fmt.Errorf("close code %d out of range", m.Code)
	}
	if len(m.Reason) > maxText {
		return fmt.Errorf("reason of %d bytes", len(m.Reason))
	}
	return checkShard(m.Shard)
}

func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeWelcome:
		return new(Welcome)
	case TypeStatus:
		return new(Status)
	case TypeIdentifyRequest:
		return new(IdentifyRequest)
	case TypeIdentifyGrant:
		return new(IdentifyGrant)
	case TypeIdentifyDone:
		return new(IdentifyDone)
	case TypeMetricsRequest:
		return new(MetricsRequest)
	case TypeMetrics:
		return new(Metrics)
	case TypeFatal:
		return new(Fatal)
	case TypeHandoffRequest:
		return new(HandoffRequest)
	case TypeHandoffShard:
		return new(HandoffShard)
	case TypeHandoffEnd:
		return new(HandoffEnd)
	case TypeHandoffAbort:
		return new(HandoffAbort)
	case TypeSessionCheckpoint:
		return new(SessionCheckpoint)
	}
	if m := newRESTMessage(t); m != nil {
		return m
	}
	if t == TypeLive {
		return new(Live)
	}
	return newFleetMessage(t)
}

// Decode turns a frame's payload into its message and validates it. Every
// error wraps ErrProtocol.
func Decode(t Type, payload []byte) (Message, error) {
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrProtocol, uint8(t))
	}
	if len(payload) > MaxPayload(t) {
		return nil, fmt.Errorf("%w: %s payload of %d bytes exceeds the limit", ErrProtocol, t, len(payload))
	}
	if mm, ok := m.(*Metrics); ok {
		if len(payload) < 8 {
			return nil, fmt.Errorf("%w: metrics payload of %d bytes has no id", ErrProtocol, len(payload))
		}
		mm.ID = binary.BigEndian.Uint64(payload)
		mm.Data = payload[8:]
		return mm, nil
	}
	if err := json.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrProtocol, t, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrProtocol, t, err)
	}
	return m, nil
}

// Encode appends m as a frame to dst.
func Encode(dst []byte, m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return dst, fmt.Errorf("encode %s: %w", m.Type(), err)
	}
	var p []byte
	if mm, ok := m.(*Metrics); ok {
		p = binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(mm.Data)), mm.ID)
		p = append(p, mm.Data...)
	} else {
		var err error
		if p, err = json.Marshal(m); err != nil {
			return dst, fmt.Errorf("encode %s: %w", m.Type(), err)
		}
	}
	return AppendFrame(dst, m.Type(), p)
}
