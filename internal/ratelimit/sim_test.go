package ratelimit

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// simDiscord answers requests as Discord (and discordtest) limit them:
// a global limit in fixed one-second windows opened by the first request,
// and per-route buckets per major parameter, their windows opened by their
// first request. It checks the limiter from the other side: a test that
// sends only under tickets expects no 429 of it.
type simDiscord struct {
	global int
	routes map[string]simRoute // by Route(key); others have no bucket

	mu       sync.Mutex
	gwin     simWindow
	wins     map[[2]string]*simWindow
	sent     []time.Duration // arrival of each request under the global limit, from start
	start    time.Time
	limited  int
	requests int
	log      []string                   // of the requests limited
	byRoute  map[string][]time.Duration // arrival of requests taken, from start, by Route(key)
}

type simRoute struct {
	hash  string
	limit int
	per   time.Duration
}

type simWindow struct {
	end  time.Time
	used int
}

func (w *simWindow) take(limit int, per time.Duration, now time.Time) bool {
	if !now.Before(w.end) {
		w.end, w.used = now.Add(per), 0
	}
	if w.used >= limit {
		return false
	}
	w.used++
	return true
}

func newSim(global int, routes map[string]simRoute) *simDiscord {
	return &simDiscord{global: global, routes: routes, wins: map[[2]string]*simWindow{}, start: time.Now(), byRoute: map[string][]time.Duration{}}
}

// do answers a request of key arriving now.
func (s *simDiscord) do(key string, now time.Time) Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if !OutsideGlobal(key) {
		if !s.gwin.take(s.global, time.Second, now) {
			s.limited++
			s.log = append(s.log, fmt.Sprintf("%v %s: global", now.Sub(s.start), key))
			return Response{Status: 429, Global: true, Scope: ScopeGlobal, RetryAfter: ceilMs(s.gwin.end.Sub(now))}
		}
		s.sent = append(s.sent, now.Sub(s.start))
	}
	rt, ok := s.routes[Route(key)]
	if !ok {
		s.byRoute[Route(key)] = append(s.byRoute[Route(key)], now.Sub(s.start))
		return Response{Status: 200}
	}
	k := [2]string{rt.hash, Major(key)}
	w := s.wins[k]
	if w == nil {
		w = &simWindow{}
		s.wins[k] = w
	}
	okb := w.take(rt.limit, rt.per, now)
	r := Response{Status: 200, Bucket: rt.hash, Limit: rt.limit, Remaining: rt.limit - w.used, ResetAfter: ceilMs(w.end.Sub(now))}
	if okb {
		s.byRoute[Route(key)] = append(s.byRoute[Route(key)], now.Sub(s.start))
	} else {
		s.limited++
		s.log = append(s.log, fmt.Sprintf("%v %s: %d used, window ends in %v", now.Sub(s.start), key, w.used, w.end.Sub(now)))
		r.Status, r.Scope, r.RetryAfter = 429, ScopeUser, ceilMs(w.end.Sub(now))
	}
	return r
}

func ceilMs(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

// maxPerSecond is the most requests under the global limit that arrived
// within any one second.
func (s *simDiscord) maxPerSecond() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maxIn(s.sent, time.Second)
}

// taken is how many requests of route were taken before d from start.
func (s *simDiscord) taken(route string, d time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, at := range s.byRoute[route] {
		if at < d {
			n++
		}
	}
	return n
}

// maxIn is the most of times (any order) within any half-open interval of
// length d.
func maxIn(times []time.Duration, d time.Duration) int {
	ts := slices.Clone(times)
	slices.Sort(ts)
	most, j := 0, 0
	for i := range ts {
		for ts[i]-ts[j] >= d {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// send does what a cluster's transport does for one request: a ticket,
// the wait, the way there and back, the report. It returns the wait.
func send(l *Limiter, s *simDiscord, key string, latency time.Duration) time.Duration {
	w := l.Ticket(key, time.Now())
	time.Sleep(w)
	time.Sleep(latency)
	r := s.do(key, time.Now())
	time.Sleep(latency)
	l.Report(key, r, time.Now())
	return w
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type fixture struct {
	l   *Limiter
	reg *prometheus.Registry
	log *syncBuffer
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewPedanticRegistry(), log: &syncBuffer{}}
	cfg.Logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := New(cfg, f.reg)
	if err != nil {
		t.Fatal(err)
	}
	f.l = l
	return f
}

// metric returns the value of the metric name whose labels include
// labels ("k", "v", ...); -1 if there is none.
func (f *fixture) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

// learn reports one answer for key as if to a ticket: the route learns
// its bucket.
func (f *fixture) learn(key, hash string, limit, remaining int, resetAfter time.Duration) {
	f.l.Ticket(key, time.Now())
	f.l.Report(key, Response{Status: http.StatusOK, Bucket: hash, Limit: limit, Remaining: remaining, ResetAfter: resetAfter}, time.Now())
}

func durs(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprint(s)
}
