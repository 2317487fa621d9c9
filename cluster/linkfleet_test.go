package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// linkTo connects a Link to a fake supervisor that sends welcome.
func linkTo(t *testing.T, welcome *wire.Welcome) (*Link, *wire.Conn) {
	t.Helper()
	pc, cf, err := wire.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	sup := wire.NewConn(pc, 5*time.Second)
	t.Cleanup(func() { sup.Close() })
	go sup.Write(welcome)
	l, err := Connect(cf.Fd(), &wire.Hello{ClusterID: 0, PID: 1, ShardIDs: []int{0}}, patience, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := sup.Read(); err != nil || m.Type() != wire.TypeHello {
		t.Fatalf("hello: %v %v", m, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, sup
}

// TestFleetCallToAnOlderSupervisor: a supervisor whose welcome does not
// say it routes fleet calls (an older version, under which a rolling
// restart runs new clusters) is not sent any: the call is unavailable at
// once instead of getting the cluster cut off.
func TestFleetCallToAnOlderSupervisor(t *testing.T) {
	tok, _ := secret.NewToken("t")
	l, sup := linkTo(t, &wire.Welcome{Token: tok})
	f := &Fleet{local: &Local{ClusterID: 0, ShardIDs: []int{0}, ShardCount: 2}, link: l}
	if _, err := f.Ask(context.Background(), 1, "x", nil); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("Ask under an older supervisor: %v, want ErrUnavailable", err)
	}
	l.Status(&wire.Status{})
	if m, err := sup.Read(); err != nil || m.Type() != wire.TypeStatus {
		t.Fatalf("the supervisor got %v (%v), want the status and no fleet call before it", m, err)
	}
}

// TestFleetCallThroughTheLink: with a supervisor that routes them, a call
// goes out as a FleetCall and its answers come back through Run.
func TestFleetCallThroughTheLink(t *testing.T) {
	tok, _ := secret.NewToken("t")
	l, sup := linkTo(t, &wire.Welcome{Token: tok, Fleet: true})
	f := &Fleet{local: &Local{ClusterID: 0, ShardIDs: []int{0}, ShardCount: 2}, link: l}
	go func() {
		m, err := sup.Read()
		if c, ok := m.(*wire.FleetCall); err == nil && ok {
			sup.Write(&wire.FleetAnswer{ID: c.ID, Cluster: 0, Of: 2, Data: json.RawMessage(`1`)})
			sup.Write(&wire.FleetAnswer{ID: c.ID, Cluster: 1, Of: 2, Code: wire.FleetUnavailable, Error: "restarting"})
		}
	}()
	answers, err := f.Broadcast(context.Background(), "x", nil)
	if err != nil || len(answers) != 2 || string(answers[0].Data) != "1" || !errors.Is(answers[1].Err, ErrUnavailable) {
		t.Fatalf("Broadcast = %+v, %v", answers, err)
	}
}
