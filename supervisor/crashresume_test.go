package supervisor

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

func TestSessionCheckpoints(t *testing.T) {
	c := Cluster{ID: 1, Shards: []int{2, 3}}
	id, err := secret.NewToken("SeSsIoN")
	if err != nil {
		t.Fatal(err)
	}
	mark := func(shard int) wire.HandoffShard { return wire.HandoffShard{Shard: shard, SessionID: id, Seq: 7} }
	now := time.Now()
	for _, tc := range []struct {
		name    string
		asked   bool
		shards  []wire.HandoffShard
		err     string // "" when accepted
		takeAt  time.Duration
		resumes int
	}{
		{"accepted", true, []wire.HandoffShard{mark(2), mark(3)}, "", time.Second, 2},
		{"nobody asked", false, []wire.HandoffShard{mark(2)}, "nobody asked for", 0, 0},
		{"another cluster's shard", true, []wire.HandoffShard{mark(2), mark(4)}, "shard 4, not one of this cluster's", 0, 0},
		{"too old when the next process starts", true, []wire.HandoffShard{mark(3)}, "", crashResumeWindow + time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			store := NewStore(Plan{ShardCount: 4, Total: 2, Clusters: []Cluster{{ID: 0, Shards: []int{0, 1}}, c}})
			ch := newChannel(c, a, nil, store, slog.New(slog.DiscardHandler))
			ch.checkpoints = tc.asked
			ch.mu.Lock()
			err := ch.checkpointed(&wire.SessionCheckpoint{Shards: tc.shards}, now)
			ch.mu.Unlock()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := store.Snapshot().Clusters[1].Resumable; got != len(tc.shards) {
				t.Errorf("Resumable = %d, want %d", got, len(tc.shards))
			}
			if got := ch.takeSessions(now.Add(tc.takeAt)); len(got) != tc.resumes {
				t.Errorf("took %d sessions, want %d", len(got), tc.resumes)
			}
			if got := ch.takeSessions(now.Add(tc.takeAt)); len(got) != 0 {
				t.Errorf("a checkpoint was taken twice: %d sessions", len(got))
			}
		})
	}
}
