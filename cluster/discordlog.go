package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
)

// discordgo v0.29.0 logs through one package variable, discordgo.Logger, in
// its own words and with its own values: Go struct dumps of gateway events
// (%#v), whole frames (unknown op, unknown event) and wrapped errors that
// may quote a payload. Payloads can carry session ids. The cluster
// translates every line it knows (by discordgo's format string, which is a
// constant in its source) into a kind, logs the kind in shardvisor's words
// without discordgo's arguments (only numbers that are safe: an opcode, a
// duration), counts each occurrence in shardvisor_gateway_warnings_total,
// and logs each kind at most once a minute, saying how many lines it held
// back since the last one. Lines it does not know are "other": logged with
// discordgo's format string, never its arguments.

// warningKind is what a discordgo line is about: a label of
// shardvisor_gateway_warnings_total and the kind key of the log line.
type warningKind struct {
	name string
	msg  string // our words
	// op, when set, is the index of discordgo's argument that is an opcode
	// (an int, safe to log); -1 for none.
	op int
	// eventOp reads the opcode out of a *discordgo.Event argument.
	eventOp int
	// dur is the index of an argument that is a time.Duration; -1 for none.
	dur int
}

// Warning kinds.
const (
	kindBinaryFrame     = "binary_frame"
	kindBadJSON         = "bad_json"
	kindUnknownOp       = "unknown_op"
	kindUnknownEvent    = "unknown_event"
	kindBadEvent        = "bad_event"
	kindUnexpectedFirst = "unexpected_first_reply"
	kindReadError       = "read_error"
	kindCloseError      = "close_error"
	kindHeartbeatSend   = "heartbeat_send_error"
	kindHeartbeatACK    = "heartbeat_ack_missed"
	kindIdentifySend    = "identify_send_error"
	kindConnectError    = "connect_error"
	kindReconnectError  = "reconnect_error"
	kindRateLimitBody   = "rate_limit_body"
	kindOther           = "other"
)

// discordgoFormats maps discordgo v0.29.0's format strings (wsapi.go,
// restapi.go) at LogWarning and LogError to their kind.
var discordgoFormats = map[string]warningKind{
	"error uncompressing websocket message, %s":                       {name: kindBinaryFrame, msg: "gateway sent a binary frame that is not zlib; dropped it", op: -1, eventOp: -1, dur: -1},
	"error closing zlib, %s":                                          {name: kindBinaryFrame, msg: "gateway sent a binary frame that did not close as zlib", op: -1, eventOp: -1, dur: -1},
	"error decoding websocket message, %s":                            {name: kindBadJSON, msg: "gateway sent a frame that is not a JSON payload; dropped it", op: -1, eventOp: -1, dur: -1},
	"unknown Op: %d, Seq: %d, Type: %s, Data: %s, message: %s":        {name: kindUnknownOp, msg: "gateway sent an opcode discordgo does not know; ignored it", op: 0, eventOp: -1, dur: -1},
	"unknown event: Op: %d, Seq: %d, Type: %s, Data: %s":              {name: kindUnknownEvent, msg: "gateway sent a dispatch type discordgo does not know; passed on unparsed", op: -1, eventOp: -1, dur: -1},
	"error unmarshalling %s event, %s":                                {name: kindBadEvent, msg: "gateway dispatch did not decode; handlers get it partly filled", op: -1, eventOp: -1, dur: -1},
	"Expected READY/RESUMED, instead got:\n%#v\n":                     {name: kindUnexpectedFirst, msg: "gateway answered IDENTIFY or RESUME with something other than READY or RESUMED", op: -1, eventOp: 0, dur: -1},
	"error reading from gateway %s websocket, %s":                     {name: kindReadError, msg: "reading from the gateway failed; the shard reconnects", op: -1, eventOp: -1, dur: -1},
	"error closing session connection, %s":                            {name: kindCloseError, msg: "closing a failed gateway connection failed", op: -1, eventOp: -1, dur: -1},
	"error sending heartbeat to gateway %s, %s":                       {name: kindHeartbeatSend, msg: "sending a heartbeat failed", op: -1, eventOp: -1, dur: -1},
	"error sending heartbeat in response to Op1":                      {name: kindHeartbeatSend, msg: "sending a heartbeat failed", op: -1, eventOp: -1, dur: -1},
	"haven't gotten a heartbeat ACK in %v, triggering a reconnection": {name: kindHeartbeatACK, msg: "gateway stopped acknowledging heartbeats; the shard reconnects", op: -1, eventOp: -1, dur: 0},
	"error sending gateway identify packet, %s, %s":                   {name: kindIdentifySend, msg: "sending IDENTIFY after INVALID_SESSION failed", op: -1, eventOp: -1, dur: -1},
	"error connecting to gateway %s, %s":                              {name: kindConnectError, msg: "connecting to the gateway failed", op: -1, eventOp: -1, dur: -1},
	"error reconnecting to gateway, %s":                               {name: kindReconnectError, msg: "reconnecting to the gateway failed", op: -1, eventOp: -1, dur: -1},
	"rate limit unmarshal error, %s":                                  {name: kindRateLimitBody, msg: "a REST 429 answer did not decode", op: -1, eventOp: -1, dur: -1},
}

var otherKind = warningKind{name: kindOther, msg: "discordgo reported a problem (its details are withheld: they may quote a payload)", op: -1, eventOp: -1, dur: -1}

// warningEvery is how often one kind is logged at most.
const warningEvery = time.Minute

// gatewayWarnings translates, counts and rate-limits discordgo's lines.
type gatewayWarnings struct {
	log   *slog.Logger
	total *prometheus.CounterVec
	// shardOf maps a session's address (as %p prints it) to its shard.
	shardOf map[string]int
	// frozen, if set, reports a handoff's freeze: the gate then closes
	// every socket under discordgo, and the read errors that follow are
	// the freeze, not a failure. They are neither logged nor counted.
	frozen func() bool

	mu   sync.Mutex
	last map[string]time.Time // when each kind was last logged
	held map[string]int       // lines of each kind not logged since
}

func newGatewayWarnings(log *slog.Logger, reg prometheus.Registerer) *gatewayWarnings {
	w := &gatewayWarnings{log: log, shardOf: map[string]int{}, last: map[string]time.Time{}, held: map[string]int{},
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_gateway_warnings_total",
			Help: "discordgo's warnings and errors, by kind (binary_frame, unknown_op, read_error, ...; the rest as other).",
		}, []string{"kind"})}
	for _, k := range discordgoFormats {
		w.total.WithLabelValues(k.name)
	}
	w.total.WithLabelValues(kindOther)
	reg.MustRegister(w.total)
	return w
}

// addShard lets lines logged from s's goroutines name shard id.
func (w *gatewayWarnings) addShard(s *discordgo.Session, id int) {
	w.shardOf[fmt.Sprintf("%p", s)] = id
}

// DiscordgoLogger returns the function for discordgo.Logger in a process
// that runs this cluster: every line at LogWarning or LogError comes out in
// shardvisor's words, with cluster_id, shard_id (-1 when the line cannot be
// traced to a shard) and kind, never with discordgo's raw arguments. Lines
// at lower levels are dropped (they print the IDENTIFY payload, token
// included); the shards ask for none.
func (c *Cluster) DiscordgoLogger() func(msgL, caller int, format string, a ...any) {
	return c.warnings.logf
}

func (w *gatewayWarnings) logf(msgL, _ int, format string, a ...any) {
	if msgL > discordgo.LogWarning {
		return
	}
	k, ok := discordgoFormats[format]
	if !ok {
		k = otherKind
	}
	if k.name == kindReadError && w.frozen != nil && w.frozen() {
		return
	}
	w.total.WithLabelValues(k.name).Inc()
	now := time.Now()
	w.mu.Lock()
	if t, seen := w.last[k.name]; seen && now.Sub(t) < warningEvery {
		w.held[k.name]++
		w.mu.Unlock()
		return
	}
	w.last[k.name] = now
	held := w.held[k.name]
	w.held[k.name] = 0
	w.mu.Unlock()

	level := slog.LevelWarn
	if msgL == discordgo.LogError {
		level = slog.LevelError
	}
	attrs := []slog.Attr{slog.Int("shard_id", w.shard()), slog.String("kind", k.name)}
	if k.op >= 0 && k.op < len(a) {
		if op, ok := a[k.op].(int); ok {
			attrs = append(attrs, slog.Int("op", op))
		}
	}
	if k.eventOp >= 0 && k.eventOp < len(a) {
		if e, ok := a[k.eventOp].(*discordgo.Event); ok && e != nil {
			attrs = append(attrs, slog.Int("op", e.Operation))
		}
	}
	if k.dur >= 0 && k.dur < len(a) {
		if d, ok := a[k.dur].(time.Duration); ok {
			attrs = append(attrs, slog.Duration("since", d))
		}
	}
	if k.name == kindOther {
		attrs = append(attrs, slog.String("format", strings.TrimSpace(format)))
	}
	if held > 0 {
		attrs = append(attrs, slog.Int("suppressed", held))
	}
	w.log.LogAttrs(context.Background(), level, k.msg, attrs...)
}

// shard finds the shard whose discordgo session is logging: discordgo logs
// from the goroutine of one session's method (Open, listen, onEvent,
// heartbeat), and the goroutine's trace prints that method's receiver. A
// receiver the trace marks as uncertain ("0x...?") is not used. -1 if none
// is found. Called at most once a minute per kind, so the trace's cost does
// not matter.
func (w *gatewayWarnings) shard() int {
	if len(w.shardOf) == 1 {
		for _, id := range w.shardOf {
			return id
		}
	}
	buf := make([]byte, 16<<10)
	buf = buf[:runtime.Stack(buf, false)]
	const marker = "github.com/bwmarrin/discordgo.(*Session)."
	for line := range strings.Lines(string(buf)) {
		i := strings.Index(line, marker)
		if i < 0 {
			continue
		}
		rest := line[i+len(marker):]
		open := strings.IndexByte(rest, '(')
		if open < 0 {
			continue
		}
		arg := rest[open+1:]
		if end := strings.IndexAny(arg, ",)"); end >= 0 {
			arg = arg[:end]
		}
		if strings.HasSuffix(arg, "?") || !strings.HasPrefix(arg, "0x") {
			continue
		}
		if _, err := strconv.ParseUint(arg[2:], 16, 64); err != nil {
			continue
		}
		if id, ok := w.shardOf[arg]; ok {
			return id
		}
	}
	return -1
}
