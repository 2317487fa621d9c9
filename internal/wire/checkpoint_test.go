package wire

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSessionCheckpointRoundTripKeepsItsSecrets(t *testing.T) {
	m := &SessionCheckpoint{Shards: []HandoffShard{
		{Shard: 3, SessionID: mustToken(t, "SeSsIoNsEcReT"), Seq: 9, ResumeURL: "wss://gateway.example"},
		{Shard: 4, SessionID: mustToken(t, "AnOtHeRsEcReT"), Seq: 1},
	}}
	b, err := Encode(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	typ, p, err := ReadFrame(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(typ, p)
	if err != nil {
		t.Fatal(err)
	}
	g := got.(*SessionCheckpoint)
	if len(g.Shards) != 2 || g.Shards[0].SessionID.Reveal() != "SeSsIoNsEcReT" || g.Shards[0].Seq != 9 ||
		g.Shards[0].ResumeURL != "wss://gateway.example" || g.Shards[1].Shard != 4 {
		t.Fatalf("round trip: %v", g.Shards)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "m", m, "shard", m.Shards[0])
	for _, s := range []string{fmt.Sprint(m), fmt.Sprintf("%+v %#v %v", m, m, m.Shards), logs.String()} {
		if strings.Contains(s, "SeSsIoNsEcReT") || strings.Contains(s, "AnOtHeRsEcReT") {
			t.Errorf("a session id shows: %s", s)
		}
	}
}

func TestSessionCheckpointValidation(t *testing.T) {
	id := mustToken(t, "abc")
	for name, m := range map[string]*SessionCheckpoint{
		"no session id":   {Shards: []HandoffShard{{Shard: 1}}},
		"a snapshot":      {Shards: []HandoffShard{{Shard: 1, SessionID: id, Snapshot: []byte{1}}}},
		"more chunks":     {Shards: []HandoffShard{{Shard: 1, SessionID: id, More: true}}},
		"a reason":        {Shards: []HandoffShard{{Shard: 1, SessionID: id, Reason: "x"}}},
		"shard twice":     {Shards: []HandoffShard{{Shard: 1, SessionID: id}, {Shard: 1, SessionID: id}}},
		"negative seq":    {Shards: []HandoffShard{{Shard: 1, SessionID: id, Seq: -1}}},
		"shard range":     {Shards: []HandoffShard{{Shard: MaxShardID + 1, SessionID: id}}},
		"http resume":     {Shards: []HandoffShard{{Shard: 1, SessionID: id, ResumeURL: "http://x"}}},
		"too many shards": {Shards: make([]HandoffShard, MaxShardsInMsg+1)},
	} {
		if _, err := Encode(nil, m); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	full := &SessionCheckpoint{}
	for i := range MaxShardsInMsg {
		full.Shards = append(full.Shards, HandoffShard{Shard: i, SessionID: mustToken(t, strings.Repeat("f", maxSessionID)),
			Seq: 1 << 62, ResumeURL: "wss://" + strings.Repeat("h", maxText-6)})
	}
	if _, err := Encode(nil, full); err != nil {
		t.Errorf("a checkpoint of %d shards at every limit: %v", MaxShardsInMsg, err)
	}
	if _, err := Encode(nil, &Welcome{Token: id, Handoff: true, HandoffCause: "whim"}); err == nil {
		t.Error("a welcome with an unknown handoff cause encoded")
	}
}
