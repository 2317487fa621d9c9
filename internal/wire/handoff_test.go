package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestHandoffShardKeepsItsSecrets: the session id travels, but no print,
// log or error shows it or the snapshot.
func TestHandoffShardKeepsItsSecrets(t *testing.T) {
	m := &HandoffShard{Shard: 3, SessionID: mustToken(t, "SeSsIoNsEcReT"), Seq: 9, Snapshot: []byte("SnApShOt")}
	b, err := Encode(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("SeSsIoNsEcReT")) {
		t.Fatal("the session id does not travel")
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "m", m, "id", m.SessionID)
	for _, s := range []string{fmt.Sprint(m), fmt.Sprintf("%+v %#v %x %s", m, m, m, m), logs.String()} {
		if strings.Contains(s, "SeSsIoNsEcReT") || strings.Contains(s, "SnApShOt") || strings.Contains(s, "536e4170") {
			t.Errorf("a secret shows: %s", s)
		}
	}
}

func TestHandoffValidation(t *testing.T) {
	bad := []Message{
		&HandoffShard{Shard: -1},
		&HandoffShard{Shard: 1, Seq: -1},
		&HandoffShard{Shard: 1, Snapshot: make([]byte, HandoffChunk+1)},
		&HandoffShard{Shard: 1, ResumeURL: "http://example.com"},
		&HandoffShard{Shard: 1, ResumeURL: "wss://"},
		&HandoffShard{Shard: 1, SessionID: mustToken(t, strings.Repeat("a", maxSessionID+1))},
		&HandoffEnd{Shards: -1},
		&HandoffAbort{Reason: strings.Repeat("x", maxText+1)},
	}
	for _, m := range bad {
		if _, err := Encode(nil, m); err == nil {
			t.Errorf("%s %v encoded", m.Type(), m)
		}
	}
	// A session id that NewToken would change is refused on the way in.
	p, _ := json.Marshal(map[string]any{"shard": 1, "session_id": "Bot x"})
	if _, err := Decode(TypeHandoffShard, p); !errors.Is(err, ErrProtocol) {
		t.Errorf("decode of an odd session id: %v", err)
	}
	// A full chunk fits its frame.
	full := &HandoffShard{Shard: MaxShardID, SessionID: mustToken(t, strings.Repeat("f", maxSessionID)), Seq: 1 << 62,
		ResumeURL: "wss://" + strings.Repeat("h", maxText-6), Reason: strings.Repeat("r", maxText),
		Snapshot: bytes.Repeat([]byte{0xff}, HandoffChunk), More: true}
	b, err := Encode(nil, full)
	if err != nil {
		t.Fatalf("a full chunk: %v", err)
	}
	if typ, p, err := ReadFrame(bytes.NewReader(b)); err != nil || typ != TypeHandoffShard {
		t.Fatalf("read a full chunk: %v", err)
	} else if _, err := Decode(typ, p); err != nil {
		t.Fatalf("decode a full chunk: %v", err)
	}
}
