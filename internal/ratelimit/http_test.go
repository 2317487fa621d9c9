package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// remoteFixture is a Limiter served over HTTP and a Remote of it.
func remoteFixture(t *testing.T) (*Limiter, *Remote) {
	t.Helper()
	l, err := New(Config{Logger: discard()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(l, nil))
	t.Cleanup(srv.Close)
	r, err := NewRemote(srv.URL+"/", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return l, r
}

// until waits, with a generous deadline, for cond.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling the limiter's state, which has no event to wait on
	}
}

// TestRemoteRoundTrip: tickets, reports and cancels over HTTP do to the
// service's Limiter what they do to a local one: a report's headers close
// the bucket, a cancel gives the ticket back.
func TestRemoteRoundTrip(t *testing.T) {
	l, r := remoteFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "POST channels/111/messages"
	wait, err := r.Ticket(ctx, key)
	if err != nil || wait != 0 {
		t.Fatalf("first ticket: wait %v, %v; want 0", wait, err)
	}
	if s := l.Stats(); s.InFlight != 1 || s.GlobalUsed != 1 {
		t.Fatalf("the service holds %d tickets, %d under the global limit; want 1, 1", s.InFlight, s.GlobalUsed)
	}
	r.Report(key, Response{Status: 200, Bucket: "abcd", Limit: 1, Remaining: 0, ResetAfter: 10 * time.Second})
	until(t, "report taken", func() bool { return l.Stats().InFlight == 0 })
	wait, err = r.Ticket(ctx, key)
	if err != nil || wait < 9*time.Second || wait > 11*time.Second {
		t.Fatalf("after a report of no requests left for 10 s: wait %v, %v", wait, err)
	}
	r.Cancel(key)
	until(t, "cancel taken", func() bool { return l.Stats().InFlight == 0 })
	if s := l.Stats(); s.Routes != 1 || s.Buckets != 1 {
		t.Errorf("the service learned %d routes, %d buckets; want 1, 1", s.Routes, s.Buckets)
	}
	// A webhook route carries its digest: the service takes it.
	if _, err := r.Ticket(ctx, RouteKey("POST", "webhooks/1/secret-token")); err != nil {
		t.Errorf("webhook key: %v", err)
	}
	if r.Dropped() != 0 || r.Failed() != 0 {
		t.Errorf("%d reports dropped, %d failed", r.Dropped(), r.Failed())
	}
}

func TestHandlerRefusesBadInput(t *testing.T) {
	l, err := New(Config{Logger: discard()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(l, nil)
	for _, tc := range []struct {
		method, path, body string
		code               int
		says               string
	}{
		{"GET", PathTicket, "", http.StatusMethodNotAllowed, "POST"},
		{"POST", "/rest/other", `{"key":"GET gateway/bot"}`, http.StatusNotFound, PathTicket},
		{"POST", PathTicket, ``, http.StatusBadRequest, "empty"},
		{"POST", PathTicket, `{"key":`, http.StatusBadRequest, "JSON"},
		{"POST", PathTicket, `{"key":"GET gateway/bot"} {}`, http.StatusBadRequest, "more than one"},
		{"POST", PathTicket, `{"key":"` + strings.Repeat("a", MaxBody) + `"}`, http.StatusRequestEntityTooLarge, "bytes"},
		{"POST", PathTicket, `{}`, http.StatusBadRequest, `"key": empty`},
		{"POST", PathTicket, `{"key":7}`, http.StatusBadRequest, `"key"`},
		{"POST", PathTicket, `{"key":"get gateway/bot"}`, http.StatusBadRequest, `"key": the method`},
		{"POST", PathTicket, `{"key":"GET /api/v10/gateway/bot"}`, http.StatusBadRequest, `"key": not a route key`},
		{"POST", PathTicket, `{"key":"POST channels/1/messages/2"}`, http.StatusBadRequest, `"key": not a route key`},
		{"POST", PathTicket, `{"key":"POST webhooks/1/secret-token"}`, http.StatusBadRequest, `"key": not a route key`},
		{"POST", PathTicket, `{"key":"GET gate\u0000way"}`, http.StatusBadRequest, `"key": byte`},
		{"POST", PathTicket, `{"key":"` + "GET " + strings.Repeat("a", MaxKey) + `"}`, http.StatusBadRequest, `"key"`},
		{"POST", PathReport, `{"key":"GET gateway/bot","status":700}`, http.StatusBadRequest, `"status"`},
		{"POST", PathReport, `{"key":"GET gateway/bot","status":200,"limit":"x"}`, http.StatusBadRequest, `"limit"`},
		{"POST", PathReport, `{"key":"GET gateway/bot","status":200,"remaining":-1}`, http.StatusBadRequest, `"remaining"`},
		{"POST", PathReport, `{"key":"GET gateway/bot","status":429,"retry_after_ns":-5}`, http.StatusBadRequest, `"retry_after_ns"`},
		{"POST", PathReport, `{"key":"GET gateway/bot","status":200,"bucket":"a b"}`, http.StatusBadRequest, `"bucket"`},
		{"POST", PathCancel, `{"key":"GET users/@me?x=1"}`, http.StatusBadRequest, `"key"`},
		// Accepted: unknown fields are ignored (a newer client).
		{"POST", PathReport, `{"key":"GET gateway/bot","status":200,"new":1}`, http.StatusNoContent, ""},
		{"POST", PathCancel, `{"key":"GET gateway/bot"}`, http.StatusNoContent, ""},
		{"POST", PathTicket, `{"key":"GET gateway/bot"}`, http.StatusOK, `{"wait_ns":0}`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.says) {
			t.Errorf("%s %s %.60q: %d %q; want %d saying %q", tc.method, tc.path, tc.body, rec.Code, rec.Body.String(), tc.code, tc.says)
		}
		if strings.Contains(rec.Body.String(), "secret-token") {
			t.Errorf("%s %.60q: the answer quotes the token", tc.path, tc.body)
		}
	}
	if s := l.Stats(); s.InFlight != 1 {
		t.Errorf("%d tickets in flight; only the one valid ticket should be", s.InFlight)
	}
}

// TestRemoteSlowOrDeadService: a service that does not answer fails the
// ticket at its context's end, one that is gone at once; neither is
// ErrRejected, which a service's refusal is. Reports never block.
func TestRemoteSlowOrDeadService(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release) // before slow.Close: its handlers must return
	r, err := NewRemote(slow.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err = r.Ticket(ctx, "GET gateway/bot")
	if took := time.Since(began); err == nil || took > 5*time.Second {
		t.Fatalf("a ticket of a silent service: %v after %v; want an error at the 100 ms deadline", err, took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrRejected) {
		t.Errorf("silent service: %v, want a deadline, not a refusal", err)
	}

	// Reports queue without blocking, eight at a time go out, the rest
	// past the queue are dropped and counted.
	began = time.Now()
	const n = remoteQueue + remoteSenders + 100
	for range n {
		r.Report("GET gateway/bot", Response{Status: 200})
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("%d reports took %v: Report blocks", n, took)
	}
	until(t, "senders busy", func() bool { return calls.Load() >= 1+remoteSenders })
	if d := r.Dropped(); d < 100 || d > n-remoteQueue {
		t.Errorf("%d reports dropped of %d, want at least 100 (queue %d, senders %d)", d, n, remoteQueue, remoteSenders)
	}
	reg := prometheus.NewPedanticRegistry()
	r.RegisterMetrics(reg)
	if got := counterValue(t, reg, "shardvisor_rest_remote_reports_dropped_total"); got != float64(r.Dropped()) {
		t.Errorf("dropped metric %v, Dropped %d", got, r.Dropped())
	}

	// Gone: the port is closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dead, err := NewRemote("http://"+addr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began = time.Now()
	if _, err := dead.Ticket(ctx, "GET gateway/bot"); err == nil || errors.Is(err, ErrRejected) || time.Since(began) > 10*time.Second {
		t.Errorf("a ticket of a closed port: %v after %v", err, time.Since(began))
	}
	dead.Report("GET gateway/bot", Response{Status: 200})
	until(t, "the failed report counted", func() bool { return dead.Failed() == 1 })

	// Refused: the service answers 400.
	l, _ := New(Config{Logger: discard()}, nil)
	srv := httptest.NewServer(Handler(l, nil))
	defer srv.Close()
	ok, _ := NewRemote(srv.URL, nil, nil)
	defer ok.Close()
	if _, err := ok.Ticket(ctx, "GET api/v10/x"); !errors.Is(err, ErrRejected) {
		t.Errorf("a key CheckKey refuses: %v, want ErrRejected", err)
	}
	old, _ := NewRemote(srv.URL+"/old", nil, nil) // a path the service does not serve: 404
	defer old.Close()
	if _, err := old.Ticket(ctx, "GET gateway/bot"); err == nil || errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "404") {
		t.Errorf("an answer 404: %v, want an error naming it, not a refusal (no service there)", err)
	}
	if _, err := ok.Ticket(ctx, "GET users/@me"); err != nil {
		t.Errorf("a good key: %v", err)
	}
}

// counterValue is the value of the counter name in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestNewRemoteURL(t *testing.T) {
	for _, u := range []string{"", "ftp://q", "http://", "queue:9852", "http://q/?x=1", "http://q/#f", "://"} {
		if r, err := NewRemote(u, nil, nil); err == nil {
			r.Close()
			t.Errorf("NewRemote(%q) accepted", u)
		}
	}
	r, err := NewRemote("https://user:pw@q:9852/limits/", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ticketURL != "https://user:pw@q:9852/limits/rest/ticket" || strings.Contains(r.URL(), "pw") {
		t.Errorf("ticket URL %q, shown as %q", r.ticketURL, r.URL())
	}
}
