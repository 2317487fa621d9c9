package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// restChannel is a channel to a child that is never started: the test
// hands it the child's messages (handle, as its read loop does) and reads
// what it would send from ch.out.
type restChannel struct {
	ch    *channel
	local *ratelimit.Limiter
	rl    *restLimits
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.b.String(), s)
}

func newRESTChannel(t *testing.T, remote RemoteREST) *restChannel {
	t.Helper()
	local, err := ratelimit.New(ratelimit.Config{Logger: slog.New(slog.DiscardHandler)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, b := net.Pipe()
	c := Cluster{ID: 0, Shards: []int{0}}
	ch := newChannel(c, a, nil, NewStore(Plan{ShardCount: 1, Total: 1, Clusters: []Cluster{c}}), log)
	rc := &restChannel{ch: ch, local: local, rl: newRESTLimits(local, remote, log), logs: logs}
	ch.rest = rc.rl
	t.Cleanup(func() {
		ch.cancel()
		ch.wg.Wait()
		a.Close()
		b.Close()
	})
	return rc
}

var restID atomic.Uint64

// ticket hands the channel a ticket for key, as its read loop would, and
// returns its id.
func (rc *restChannel) ticket(t *testing.T, key string) uint64 {
	t.Helper()
	id := restID.Add(1)
	if err := rc.ch.handle(&wire.RESTTicket{ID: id, Key: key}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (rc *restChannel) report(t *testing.T, key string, status int) {
	t.Helper()
	if err := rc.ch.handle(&wire.RESTReport{Key: key, Status: status}); err != nil {
		t.Fatal(err)
	}
}

// grant waits for the next grant the channel sends.
func (rc *restChannel) grant(t *testing.T) *wire.RESTGrant {
	t.Helper()
	select {
	case m := <-rc.ch.out:
		g, ok := m.(*wire.RESTGrant)
		if !ok {
			t.Fatalf("sent %s, want a REST grant", m.Type())
		}
		return g
	case <-time.After(30 * time.Second):
		t.Fatal("no grant within 30s")
	}
	return nil
}

func (rc *restChannel) noGrant(t *testing.T) {
	t.Helper()
	select {
	case m := <-rc.ch.out:
		t.Fatalf("sent %s, want nothing", m.Type())
	default:
	}
}

// until polls cond (the limiters' state has no event to wait on).
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRESTRemoteService: with a REST limits service that answers, the
// tickets are the service's, their reports go back to it, and the local
// limiter holds none.
func TestRESTRemoteService(t *testing.T) {
	service, err := ratelimit.New(ratelimit.Config{Logger: slog.New(slog.DiscardHandler)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ratelimit.Handler(service, nil))
	defer srv.Close()
	remote, err := ratelimit.NewRemote(srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	rc := newRESTChannel(t, remote)
	const key = "POST channels/1/messages"
	for range 3 {
		id := rc.ticket(t, key)
		if g := rc.grant(t); g.ID != id {
			t.Fatalf("grant %+v, want %d", g, id)
		}
	}
	if s := service.Stats(); s.InFlight != 3 {
		t.Errorf("the service holds %d tickets, want 3", s.InFlight)
	}
	if s := rc.local.Stats(); s.InFlight != 0 {
		t.Errorf("the local limiter holds %d tickets, want none", s.InFlight)
	}
	rc.report(t, key, 200)
	rc.report(t, key, 0)
	rc.report(t, key, 200)
	until(t, "reports taken by the service", func() bool { return service.Stats().InFlight == 0 })
	if rc.ch.restOpen != 0 || rc.ch.restHeld != 0 || len(rc.ch.restFrom) != 0 {
		t.Errorf("after every report: %d open, %d held, %d keys", rc.ch.restOpen, rc.ch.restHeld, len(rc.ch.restFrom))
	}
	if got := testutil.ToFloat64(rc.rl.fallbacks); got != 0 {
		t.Errorf("%v fallbacks with a service that answers", got)
	}
}

// TestRESTRemoteFallsBack: a service that does not answer never blocks
// the read loop; its ticket is granted locally after 100 ms, and the
// tickets of the next 5 s locally at once, logged and counted once. After
// the period the service is asked again.
func TestRESTRemoteFallsBack(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	remote, err := ratelimit.NewRemote(srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	rc := newRESTChannel(t, remote)
	const key = "GET users/@me"

	asked := time.Now()
	id := rc.ticket(t, key) // returns while the service is silent: the read loop goes on
	rc.noGrant(t)
	if g := rc.grant(t); g.ID != id {
		t.Fatalf("grant %d, want %d", g.ID, id)
	}
	if took := time.Since(asked); took < restRemoteTimeout {
		t.Errorf("granted after %v, before the service's %v were up", took, restRemoteTimeout)
	}
	if s := rc.local.Stats(); s.InFlight != 1 {
		t.Fatalf("the local limiter holds %d tickets, want the fallen-back one", s.InFlight)
	}
	// The breaker is open: granted at once, without asking.
	for range 5 {
		id := rc.ticket(t, key)
		select {
		case m := <-rc.ch.out:
			if g := m.(*wire.RESTGrant); g.ID != id {
				t.Fatalf("grant %d, want %d", g.ID, id)
			}
		default:
			t.Fatal("a ticket during the fallback period was not granted at once")
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the service was asked %d times, want once", n)
	}
	for range 6 {
		rc.report(t, key, 200)
	}
	if s := rc.local.Stats(); s.InFlight != 0 {
		t.Errorf("the local limiter holds %d tickets after their reports", s.InFlight)
	}
	if got := testutil.ToFloat64(rc.rl.fallbacks); got != 1 {
		t.Errorf("%v fallbacks, want 1", got)
	}
	if n := rc.logs.count("REST limits service unreachable"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}

	// The period ends: the service is asked again, fails again.
	rc.rl.mu.Lock()
	rc.rl.downUntil = time.Now()
	rc.rl.mu.Unlock()
	rc.ticket(t, key)
	rc.grant(t)
	until(t, "the service asked again", func() bool { return calls.Load() == 2 })
	if got := testutil.ToFloat64(rc.rl.fallbacks); got != 2 {
		t.Errorf("%v fallbacks after a second period, want 2", got)
	}
	if n := rc.logs.count("REST limits service unreachable"); n != 2 {
		t.Errorf("logged %d times over two periods, want twice", n)
	}
}

// fakeRemote is a REST limits service whose tickets wait for release
// (whatever their context says) and then answer err.
type fakeRemote struct {
	release chan struct{}
	err     error
	asked   atomic.Int64

	mu      sync.Mutex
	reports []string
}

func (f *fakeRemote) Ticket(ctx context.Context, key string) (time.Duration, error) {
	f.asked.Add(1)
	<-f.release
	return 7 * time.Millisecond, f.err
}

func (f *fakeRemote) Report(key string, r ratelimit.Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, fmt.Sprintf("%s %d", key, r.Status))
}

func (f *fakeRemote) Cancel(key string) { f.Report(key, ratelimit.Response{}) }

func (f *fakeRemote) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reports...)
}

// TestRESTRemoteBounds: at most restRemoteInFlight tickets are asked of
// the service at once; one past them is not granted (the child goes on
// alone). A report that comes before its ticket's answer goes where the
// ticket went once it is answered, and that grant is not sent.
func TestRESTRemoteBounds(t *testing.T) {
	f := &fakeRemote{release: make(chan struct{})}
	rc := newRESTChannel(t, f)
	const key = "POST channels/1/messages"
	for range restRemoteInFlight {
		rc.ticket(t, key)
	}
	until(t, "every ticket asked", func() bool { return f.asked.Load() == restRemoteInFlight })
	rc.ticket(t, "GET users/@me") // past the bound
	if n := f.asked.Load(); n != restRemoteInFlight {
		t.Errorf("%d tickets asked of the service, want at most %d", n, restRemoteInFlight)
	}
	rc.report(t, "GET users/@me", 200) // nobody's ticket: learned locally
	rc.report(t, key, 204)             // the oldest ticket of key, still pending
	close(f.release)
	grants := 0
	for range restRemoteInFlight - 1 {
		if g := rc.grant(t); g.Wait != 7*time.Millisecond {
			t.Fatalf("grant %+v, want the service's wait", g)
		}
		grants++
	}
	until(t, "the early report delivered", func() bool { return len(f.got()) == 1 })
	rc.noGrant(t)
	if got := f.got(); got[0] != key+" 204" {
		t.Errorf("the service got %q, want the early report", got)
	}
	if s := rc.local.Stats(); s.InFlight != 0 || s.Routes != 1 {
		t.Errorf("local limiter: %d in flight, %d routes; want 0 and the one learned from", s.InFlight, s.Routes)
	}
	for range restRemoteInFlight - 1 {
		rc.report(t, key, 0)
	}
	if got := f.got(); len(got) != restRemoteInFlight || got[1] != key+" 0" {
		t.Errorf("the service got %d reports (%q...), want %d", len(got), got[:min(2, len(got))], restRemoteInFlight)
	}
}

// TestRESTRemoteRefusal: a ticket the service refuses (a key it does not
// take) is granted locally, without opening the breaker.
func TestRESTRemoteRefusal(t *testing.T) {
	f := &fakeRemote{release: make(chan struct{}), err: fmt.Errorf("400: %w", ratelimit.ErrRejected)}
	close(f.release)
	rc := newRESTChannel(t, f)
	rc.ticket(t, "GET odd key")
	rc.grant(t)
	if rc.rl.useRemote(time.Now()) != true || testutil.ToFloat64(rc.rl.fallbacks) != 0 {
		t.Error("a refusal opened the breaker")
	}
	rc.report(t, "GET odd key", 200)
	if s := rc.local.Stats(); s.InFlight != 0 || len(f.got()) != 0 {
		t.Errorf("the refused ticket's report: local %d in flight, service got %q", s.InFlight, f.got())
	}
}

func TestRemoteRESTNeedsLocal(t *testing.T) {
	q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
	tok, _ := secret.NewToken("t")
	cfg := Config{Plan: Plan{ShardCount: 1, Total: 1, Clusters: []Cluster{{ID: 0, Shards: []int{0}}}}, Launcher: &ExecLauncher{},
		Policy: DefaultRestartPolicy(), Queue: q, Token: tok, ShutdownTimeout: time.Second, ChildWatchdog: time.Second,
		RemoteREST: &fakeRemote{}}
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "Config.RemoteREST") {
		t.Errorf("RemoteREST without REST: %v", err)
	}
}
