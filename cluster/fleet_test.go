package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// TestServeAlone: a cluster without a supervisor answers its own fleet
// calls, built-ins included, and every failure is the error it should be.
func TestServeAlone(t *testing.T) {
	fx := startClusterWith(t, discordtest.Options{Shards: 2, Guilds: 6}, []int{0, 1}, setup{bot: func(b *Bot) {
		b.Serve("sum", func(_ context.Context, _ *Local, req json.RawMessage) (any, error) {
			var xs []int
			if err := json.Unmarshal(req, &xs); err != nil {
				return nil, err
			}
			n := 0
			for _, x := range xs {
				n += x
			}
			return n, nil
		})
		b.Serve("boom", func(context.Context, *Local, json.RawMessage) (any, error) { panic("boom") })
		b.Serve("big", func(context.Context, *Local, json.RawMessage) (any, error) {
			return strings.Repeat("x", wire.MaxFleetAnswerData), nil
		})
		b.Serve("fails", func(context.Context, *Local, json.RawMessage) (any, error) { return nil, errors.New("no luck") })
		b.Serve("who", func(ctx context.Context, l *Local, _ json.RawMessage) (any, error) {
			if FleetFrom(ctx) != l.Fleet {
				return nil, errors.New("FleetFrom(ctx) is not the handler's fleet")
			}
			return l.ClusterID, nil
		})
	}})
	fx.waitStatus(t, "every shard ready", func(st *wire.Status) bool {
		for _, s := range st.Shards {
			if s.State != wire.ShardReady {
				return false
			}
		}
		return true
	})
	f := fx.c.Local().Fleet
	ctx := context.Background()

	if n, err := As[int](f.Ask(ctx, 0, "sum", []int{1, 2, 3})); err != nil || n != 6 {
		t.Errorf("sum = %d, %v; want 6", n, err)
	}
	if _, err := f.Ask(ctx, 0, "boom", nil); !errors.Is(err, ErrHandlerPanic) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("panicking handler: %v, want ErrHandlerPanic", err)
	}
	if n, err := As[int](f.Ask(ctx, 0, "sum", []int{4})); err != nil || n != 4 {
		t.Errorf("after the panic: sum = %d, %v", n, err)
	}
	if _, err := f.Ask(ctx, 0, "big", nil); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "exceeds the limit of 1048576") {
		t.Errorf("oversized answer: %v, want ErrTooLarge naming the limit", err)
	}
	if _, err := f.Ask(ctx, 0, "sum", strings.Repeat("y", wire.MaxFleetRequestData)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized request: %v, want ErrTooLarge", err)
	}
	if _, err := f.Ask(ctx, 0, "nope", nil); !errors.Is(err, ErrNoSuchRequest) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown name: %v, want ErrNoSuchRequest", err)
	}
	if _, err := f.Ask(ctx, 0, "fails", nil); err == nil || !strings.Contains(err.Error(), "no luck") {
		t.Errorf("failing handler: %v", err)
	}
	if _, err := f.Ask(ctx, 1, "sum", nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("another cluster, without a supervisor: %v, want ErrUnavailable", err)
	}
	if id, err := As[int](f.Ask(ctx, 0, "who", nil)); err != nil || id != 0 {
		t.Errorf("who = %d, %v", id, err)
	}

	stats, err := f.Stats(ctx)
	if err != nil || stats[0].Guilds != 6 || stats[0].ShardsReady != 2 || stats[0].MemoryBytes == 0 {
		t.Errorf("stats = %+v, %v; want 6 guilds on 2 ready shards", stats, err)
	}
	for _, id := range fx.fake.GuildIDs() {
		g, err := f.Guild(ctx, id)
		if err != nil || !g.Cached || !g.ShardReady || !strings.HasPrefix(g.Name, "guild-") || g.ClusterID != 0 {
			t.Errorf("guild %s: %+v, %v", id, g, err)
		}
	}
	if _, err := f.Guild(ctx, "12x"); !errors.Is(err, ErrBadRequest) {
		t.Errorf("bad guild id: %v, want ErrBadRequest", err)
	}
}

func TestServeRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "shardvisor.stats", "a b", strings.Repeat("n", 101)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Serve(%q) did not panic", name)
				}
			}()
			NewBot().Serve(name, func(context.Context, *Local, json.RawMessage) (any, error) { return nil, nil })
		}()
	}
}

func TestDecodeKeepsPartialResults(t *testing.T) {
	answers := []Answer{
		{ClusterID: 0, Data: json.RawMessage(`{"guilds":3}`)},
		{ClusterID: 1, Err: &FleetError{Name: "x", ClusterID: 1, Code: wire.FleetUnavailable, Message: "restarting"}},
		{ClusterID: 2, Data: json.RawMessage(`"not an object"`)},
	}
	got, err := Decode[Stats](answers)
	if len(got) != 1 || got[0].Guilds != 3 {
		t.Errorf("Decode = %+v, want cluster 0's", got)
	}
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cluster 2") {
		t.Errorf("Decode error %v, want cluster 1 unavailable and cluster 2 undecodable", err)
	}
}
