package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
)

// TestPageWeight keeps the embedded page small and self-contained: no
// request leaves for another origin (no CDN, the machine may have no
// internet), and it weighs less than pageLimit.
func TestPageWeight(t *testing.T) {
	t.Logf("page weight: %d bytes uncompressed (limit %d)", len(pageHTML), pageLimit)
	if len(pageHTML) > pageLimit {
		t.Errorf("the page weighs %d bytes, more than %d", len(pageHTML), pageLimit)
	}
	// Any absolute or protocol-relative URL in an attribute, CSS url() or
	// a fetch would be a request elsewhere.
	for _, re := range []string{`(?i)(src|href|action)\s*=\s*["']?(https?:)?//`, `(?i)url\(\s*["']?(https?:)?//`, `(?i)fetch\(\s*["'](https?:)?//`, `(?i)@import`} {
		if m := regexp.MustCompile(re).Find(pageHTML); m != nil {
			t.Errorf("the page refers elsewhere: %q", m)
		}
	}
	for _, want := range []string{"prefers-color-scheme: dark", "<label for=\"guild\"", ":focus-visible", "name=\"viewport\""} {
		if !strings.Contains(string(pageHTML), want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// TestPageReadOnly: the metrics port has no authentication, so nothing
// it serves may take anything but GET (and HEAD): POST, PUT, DELETE and
// PATCH are refused on every path, and / is the page, no other path.
func TestPageReadOnly(t *testing.T) {
	tr := start(t, 1, "well")
	srv := httptest.NewServer(tr.s.Handler(http.NotFoundHandler()))
	defer srv.Close()
	for _, path := range []string{"/", "/status", "/healthz", "/readyz", "/metrics"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", method, path, resp.StatusCode)
			}
		}
	}
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || string(body) != string(pageHTML) {
		t.Errorf("GET /: %d %s, %d bytes; want the page", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q: want nothing but this origin", csp)
	}
	resp, err = http.Get(srv.URL + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /index.html: %d, want 404 (the page is at / only)", resp.StatusCode)
	}
}

// TestStatusCarriesEventsAndQueue: /status, which the page reads, has
// the identify queue and the recent events (a kill -9 among them), and
// never the token.
func TestStatusCarriesEventsAndQueue(t *testing.T) {
	var q *identify.Queue
	tr := start(t, 2, "well", func(c *Config) {
		q = c.Queue.(*identify.Queue)
		c.QueueStats = q.Stats
	})
	snap := tr.waitFor(t, "all ready", ready)
	if err := syscall.Kill(snap.Clusters[1].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tr.waitFor(t, "cluster 1 replaced and ready", func(s Snapshot) bool { return s.Clusters[1].Generation == 2 && s.Ready })
	srv := httptest.NewServer(tr.s.Handler(nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got Snapshot
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Identify == nil || len(got.Identify.Waiting) != 1 || got.Identify.SessionStartLimit != -1 {
		t.Errorf("identify in /status: %+v, want 1 bucket and the limit not known (-1)", got.Identify)
	}
	var restart *Event
	for i, e := range got.Events {
		if e.Kind == EventRestart && e.ClusterID == 1 {
			restart = &got.Events[i]
		}
	}
	if restart == nil || !strings.Contains(restart.Message, "signal killed") {
		t.Errorf("events %+v: want cluster 1's restart after signal killed", got.Events)
	}
	if strings.Contains(string(body), "test-token") {
		t.Error("the token appears in /status")
	}
}

// TestEventsRing keeps the last eventsKept events, oldest first.
func TestEventsRing(t *testing.T) {
	s := NewStore(Plan{ShardCount: 1, Total: 1, Clusters: []Cluster{{ID: 0, Shards: []int{0}}}})
	for i := range eventsKept + 5 {
		s.Event(Event{Kind: EventRestart, Message: fmt.Sprint(i), At: time.Unix(int64(i), 0)})
	}
	evs := s.Snapshot().Events
	if len(evs) != eventsKept || evs[0].Message != "5" || evs[len(evs)-1].Message != fmt.Sprint(eventsKept+4) {
		t.Fatalf("%d events from %q to %q; want %d from 5 to %d", len(evs), evs[0].Message, evs[len(evs)-1].Message, eventsKept, eventsKept+4)
	}
}
