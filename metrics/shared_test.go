package metrics

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// patience bounds every wait on an event (a busy 2-core machine).
const patience = 90 * time.Second

// blocking is a gatherer whose every Gather signals started and then
// waits for release; it answers with a new family, or with err.
type blocking struct {
	calls   atomic.Int32
	started chan struct{}
	release chan struct{}
	err     error
}

func newBlocking() *blocking {
	return &blocking{started: make(chan struct{}, 10), release: make(chan struct{})}
}

func (b *blocking) Gather() ([]*dto.MetricFamily, error) {
	b.calls.Add(1)
	b.started <- struct{}{}
	<-b.release
	return []*dto.MetricFamily{{Name: proto.String("x")}}, b.err
}

func wait(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(patience):
		t.Fatalf("%s: not within %v", what, patience)
	}
}

// until polls cond, a state another goroutine reaches without telling.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, patience)
		}
		time.Sleep(time.Millisecond)
	}
}

type gathered struct {
	mfs []*dto.MetricFamily
	err error
}

func TestSharedOverlappingGathersShareOne(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := map[bool]string{false: "ok", true: "error"}[fail]
		t.Run(name, func(t *testing.T) {
			g := newBlocking()
			if fail {
				g.err = errors.New("a cluster sent garbage")
			}
			s := Shared(g).(*sharedGatherer)
			results := make(chan gathered, 3)
			gather := func() {
				mfs, err := s.Gather()
				results <- gathered{mfs, err}
			}
			go gather()
			wait(t, "the first gather", g.started)
			go gather()
			go gather()
			until(t, "two calls joining the first", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.flight.joined == 2
			})
			close(g.release)
			var first gathered
			for i := range 3 {
				r := <-results
				if i == 0 {
					first = r
				}
				if len(r.mfs) != 1 || r.mfs[0] != first.mfs[0] || r.err != first.err || (r.err != nil) != fail {
					t.Errorf("call %d got %v, %v; the first got %v, %v", i, r.mfs, r.err, first.mfs, first.err)
				}
			}
			if n := g.calls.Load(); n != 1 {
				t.Errorf("3 overlapping calls gathered %d times, want 1", n)
			}
			// Nothing is kept once the flight is over, errors included.
			g.err = nil
			if mfs, err := s.Gather(); err != nil || len(mfs) != 1 || mfs[0] == first.mfs[0] {
				t.Errorf("a call after the flight got %v, %v: want a gather of its own", mfs, err)
			}
			if n := g.calls.Load(); n != 2 {
				t.Errorf("after the flight: %d gathers, want 2", n)
			}
		})
	}
}

// blockingHandler answers each request with its number (padded, to be
// worth compressing), once released.
type blockingHandler struct {
	calls    atomic.Int32
	started  chan struct{}
	release  chan struct{}
	encoding atomic.Bool // a request came with Accept-Encoding
}

func (h *blockingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.calls.Add(1)
	if r.Header.Get("Accept-Encoding") != "" {
		h.encoding.Store(true)
	}
	h.started <- struct{}{}
	<-h.release
	if r.URL.Query().Has("panic") {
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Call", strconv.Itoa(int(n)))
	w.WriteHeader(http.StatusTeapot)
	fmt.Fprintf(w, "answer of call %d%s", n, strings.Repeat(" ", 2000))
}

// body returns rec's body, gunzipped if it says so.
func body(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if rec.Header().Get("Content-Encoding") != "gzip" {
		return strings.TrimSpace(rec.Body.String())
	}
	zr, err := gzip.NewReader(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestShareResponsesOverlappingRequestsShareOne(t *testing.T) {
	h := &blockingHandler{started: make(chan struct{}, 10), release: make(chan struct{})}
	reg := prometheus.NewPedanticRegistry()
	s := ShareResponses(h, 0, reg)
	shared := func() float64 { return testutil.ToFloat64(s.(*sharedHandler).shared) }
	get := func(uri, accept, encoding string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, uri, nil)
		req.Header.Set("Accept", accept)
		if encoding != "" {
			req.Header.Set("Accept-Encoding", encoding)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	var wg sync.WaitGroup
	recs := make([]*httptest.ResponseRecorder, 5)
	wg.Go(func() { recs[0] = get("/metrics", "text/plain", "gzip") })
	wait(t, "the first request", h.started)
	wg.Go(func() { recs[1] = get("/metrics", "text/plain", "gzip, deflate") })
	wg.Go(func() { recs[2] = get("/metrics", "text/plain", "") }) // the same answer, not compressed
	until(t, "two requests joining the first", func() bool { return shared() == 2 })
	// Another Accept, another URI: answers of their own.
	wg.Go(func() { recs[3] = get("/metrics", "application/openmetrics-text", "gzip") })
	wait(t, "the request of another Accept", h.started)
	wg.Go(func() { recs[4] = get("/metrics?x=1", "text/plain", "gzip;q=0") })
	wait(t, "the request of another URI", h.started)
	close(h.release)
	wg.Wait()
	if n := h.calls.Load(); n != 3 {
		t.Errorf("the handler ran %d times for 3 identical requests and 2 others, want 3", n)
	}
	for i, want := range []string{"gzip", "gzip", "", "gzip", ""} {
		if got := recs[i].Header().Get("Content-Encoding"); got != want {
			t.Errorf("request %d: Content-Encoding %q, want %q", i, got, want)
		}
	}
	for i, rec := range recs[:3] {
		if rec.Code != http.StatusTeapot || body(t, rec) != "answer of call 1" || rec.Header().Get("X-Call") != "1" ||
			rec.Header().Get("Content-Type") != "text/plain" || rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("identical request %d: %d %v %q, want the first's answer", i, rec.Code, rec.Header(), body(t, rec))
		}
	}
	if got := body(t, recs[3]); got != "answer of call 2" {
		t.Errorf("the request of another Accept got %q, want an answer of its own", got)
	}
	if got := body(t, recs[4]); got != "answer of call 3" {
		t.Errorf("the request of another URI got %q, want an answer of its own", got)
	}
	if h.encoding.Load() {
		t.Error("the handler saw Accept-Encoding: it would compress what ShareResponses compresses")
	}
	if shared() != 2 {
		t.Errorf("shardvisor_scrapes_shared_total = %v, want 2", shared())
	}
	// Nothing is kept once the answer is written.
	if got := body(t, get("/metrics", "text/plain", "gzip")); got != "answer of call 4" {
		t.Errorf("a request after the others got %q, want an answer of its own", got)
	}
	want := `# HELP shardvisor_scrapes_shared_total Scrapes of /metrics that waited for the response of an identical scrape under way when they came, instead of asking the clusters again.
# TYPE shardvisor_scrapes_shared_total counter
shardvisor_scrapes_shared_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "shardvisor_scrapes_shared_total"); err != nil {
		t.Error(err) // registered, and pedantic-clean
	}
}

func TestAcceptsGzip(t *testing.T) {
	for in, want := range map[string]bool{"": false, "gzip": true, "GZIP": true, "deflate, gzip;q=0.5": true,
		"gzip;q=0": false, "gzip; q=0.000": false, "*": true, "identity": false, "br, zstd": false} {
		if got := acceptsGzip([]string{in}); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestShareResponsesPanicAnswers500(t *testing.T) {
	h := &blockingHandler{started: make(chan struct{}, 10), release: make(chan struct{})}
	s := ShareResponses(h, 0, prometheus.NewRegistry())
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/metrics?panic", nil))
	}()
	wait(t, "the first request", h.started)
	joined := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics?panic", nil))
		joined <- rec
	}()
	until(t, "the second request joining", func() bool { return testutil.ToFloat64(s.(*sharedHandler).shared) == 1 })
	close(h.release)
	if p := <-panicked; p != http.ErrAbortHandler {
		t.Errorf("the first request's handler: recovered %v, want its panic", p)
	}
	if rec := <-joined; rec.Code != http.StatusInternalServerError || rec.Body.Len() != 0 {
		t.Errorf("the request that joined a panicking one: %d %q, want a bare 500", rec.Code, rec.Body)
	}
}

// numbered answers each request with its number, or with status when
// the URI asks for it (?status=503).
type numbered struct{ calls atomic.Int32 }

func (h *numbered) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.calls.Add(1)
	if s := r.URL.Query().Get("status"); s != "" {
		code, _ := strconv.Atoi(s)
		w.WriteHeader(code)
	}
	fmt.Fprintf(w, "answer of call %d%s", n, strings.Repeat(" ", 2000))
}

func TestShareResponsesReusesKeptAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const reuse = 500 * time.Millisecond
		h := &numbered{}
		s := ShareResponses(h, reuse, prometheus.NewPedanticRegistry()).(*sharedHandler)
		get := func(uri string, header ...string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, uri, nil)
			for i := 0; i+1 < len(header); i += 2 {
				req.Header.Set(header[i], header[i+1])
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			return rec
		}
		step := func(what, uri, want string, header ...string) {
			t.Helper()
			if got := body(t, get(uri, header...)); got != want {
				t.Errorf("%s: got %q, want %q", what, got, want)
			}
		}
		step("the first scrape", "/metrics", "answer of call 1", "Accept-Encoding", "gzip")
		time.Sleep(reuse - time.Nanosecond)
		// The same answer, gzipped or not, whoever asks for it.
		step("an identical scrape just within reuse", "/metrics", "answer of call 1")
		step("an identical scrape with gzip", "/metrics", "answer of call 1", "Accept-Encoding", "gzip")
		if rec := get("/metrics", "Accept-Encoding", "gzip"); rec.Header().Get("Content-Encoding") != "gzip" {
			t.Errorf("a kept answer to a scrape that accepts gzip: Content-Encoding %q, want gzip", rec.Header().Get("Content-Encoding"))
		}
		step("a scrape of another Accept", "/metrics", "answer of call 2", "Accept", "application/openmetrics-text")
		step("a scrape of another URI", "/metrics?x=1", "answer of call 3")
		// no-cache: gathered afresh, and what it got is what is kept now.
		step("a scrape with no-cache", "/metrics", "answer of call 4", "Cache-Control", "no-cache")
		step("a scrape with max-age=0", "/metrics", "answer of call 5", "Cache-Control", "max-age=0")
		step("an identical scrape after that", "/metrics", "answer of call 5", "Cache-Control", "max-age=60")
		time.Sleep(reuse)
		step("an identical scrape reuse after the kept one began", "/metrics", "answer of call 6")
		// Only complete 200 answers are kept.
		step("a failed scrape", "/metrics?status=503", "answer of call 7")
		step("the failed scrape again", "/metrics?status=503", "answer of call 8")
		if got := testutil.ToFloat64(s.reused); got != 4 {
			t.Errorf("shardvisor_scrapes_reused_total = %v, want 4", got)
		}
		if got := testutil.ToFloat64(s.shared); got != 0 {
			t.Errorf("shardvisor_scrapes_shared_total = %v, want 0: nothing overlapped", got)
		}
		// At most maxKept answers; expired ones are dropped.
		time.Sleep(reuse)
		for i := range maxKept + 1 {
			get(fmt.Sprintf("/metrics?n=%d", i))
		}
		calls := h.calls.Load()
		step("the scrape that found the kept answers full, again", fmt.Sprintf("/metrics?n=%d", maxKept), fmt.Sprintf("answer of call %d", calls+1))
		step("a scrape whose answer is kept", "/metrics?n=0", fmt.Sprintf("answer of call %d", calls-maxKept))
		s.mu.Lock()
		if len(s.kept) != maxKept {
			t.Errorf("%d answers kept, want %d", len(s.kept), maxKept)
		}
		s.mu.Unlock()
		time.Sleep(reuse)
		step("a scrape after every kept answer expired", "/metrics?n=0", fmt.Sprintf("answer of call %d", calls+2))
		s.mu.Lock()
		if len(s.kept) != 1 {
			t.Errorf("%d answers kept once the others expired, want 1", len(s.kept))
		}
		s.mu.Unlock()
	})
}

func TestShareResponsesWithoutReuseKeepsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &numbered{}
		s := ShareResponses(h, 0, prometheus.NewRegistry())
		for i := range 3 {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if got, want := body(t, rec), fmt.Sprintf("answer of call %d", i+1); got != want {
				t.Errorf("scrape %d: got %q, want %q", i, got, want)
			}
		}
	})
}

func TestWantsFresh(t *testing.T) {
	for in, want := range map[string]bool{"": false, "no-cache": true, "No-Cache": true, "max-age=0": true,
		"max-age=0, private": true, "no-store": true, "max-age=1": false, "public, max-age=60": false, "no-transform": false} {
		if got := wantsFresh([]string{in}); got != want {
			t.Errorf("wantsFresh(%q) = %v, want %v", in, got, want)
		}
	}
}
