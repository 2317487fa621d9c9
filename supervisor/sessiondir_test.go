package supervisor

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/sessiondir"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// TestParking: what an old process hands over at a stop is written one
// record per shard with a session, its chunks joined; a handoff out of
// order, for a foreign shard, or ended mid-shard breaks the protocol.
func TestParking(t *testing.T) {
	tok, _ := secret.NewToken("the.bot.token")
	sess, _ := secret.NewToken("session-id")
	big := make([]byte, wire.HandoffChunk+10)
	shard := func(id int, snap []byte) []wire.Message {
		var out []wire.Message
		for c := range (&wire.HandoffShard{Shard: id, SessionID: sess, Seq: 7, Snapshot: snap}).Chunks() {
			out = append(out, c)
		}
		return out
	}
	cat := func(ms ...[]wire.Message) []wire.Message {
		var out []wire.Message
		for _, m := range ms {
			out = append(out, m...)
		}
		return out
	}
	tests := []struct {
		name    string
		msgs    []wire.Message
		want    string // "" accepted
		written []int
	}{
		{"two shards, one of two chunks", cat(shard(1, big), shard(2, []byte("x")), []wire.Message{&wire.HandoffEnd{Shards: 2}}), "", []int{1, 2}},
		{"a shard without a session", []wire.Message{&wire.HandoffShard{Shard: 1, Reason: "no_session"}, &wire.HandoffEnd{Shards: 1}}, "", nil},
		{"a foreign shard", shard(5, nil), "not one of this cluster's", nil},
		{"interleaved", cat(shard(1, big)[:1], shard(2, nil)), "out of order", nil},
		{"ended mid-shard", cat(shard(1, big)[:1], []wire.Message{&wire.HandoffEnd{Shards: 1}}), "in the middle of shard 1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := sessiondir.Open(t.TempDir(), sessiondir.Binding{UserID: "1", ShardCount: 8, Token: tok}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			recs := newSessionRecords(d)
			p := &parking{recs: recs, shards: map[int]bool{1: true, 2: true}, log: slog.New(slog.DiscardHandler)}
			var err2 error
			for _, m := range tt.msgs {
				if err2 = p.take(m); err2 != nil {
					break
				}
			}
			switch {
			case tt.want == "" && err2 != nil:
				t.Fatalf("take: %v", err2)
			case tt.want != "" && (err2 == nil || !strings.Contains(err2.Error(), tt.want)):
				t.Fatalf("take: %v, want an error with %q", err2, tt.want)
			}
			if p.written != len(tt.written) {
				t.Errorf("%d records written, want %d", p.written, len(tt.written))
			}
			for _, id := range tt.written {
				h, err := d.Take(id, time.Now())
				if err != nil || h == nil || h.Seq != 7 {
					t.Errorf("shard %d's record: %v, %v", id, h, err)
				} else if id == 1 && len(h.Snapshot) != len(big) {
					t.Errorf("shard 1's snapshot: %d bytes, want %d", len(h.Snapshot), len(big))
				}
			}
		})
	}
}
