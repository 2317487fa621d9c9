package metrics

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Shared returns a gatherer whose Gather calls share g's: a call made while
// another's gather of g is under way waits for that one and returns its
// families and error, instead of asking every cluster again. Nothing is
// kept once the gather has returned, so the families a call gets are never
// older than the gather in flight when it was made: at most one gather's
// duration, within what a scrape's timestamp means anyway. The families
// returned are shared between the callers and must not be changed.
func Shared(g prometheus.Gatherer) prometheus.Gatherer {
	return &sharedGatherer{g: g}
}

type sharedGatherer struct {
	g      prometheus.Gatherer
	mu     sync.Mutex
	flight *gathering // nil when no gather runs
}

type gathering struct {
	done   chan struct{}
	joined int // calls waiting for it, under sharedGatherer.mu
	mfs    []*dto.MetricFamily
	err    error
}

func (s *sharedGatherer) Gather() ([]*dto.MetricFamily, error) {
	s.mu.Lock()
	if f := s.flight; f != nil {
		f.joined++
		s.mu.Unlock()
		<-f.done
		return f.mfs, f.err
	}
	f := &gathering{done: make(chan struct{})}
	s.flight = f
	s.mu.Unlock()
	defer func() { // also when g panics: the waiters get nothing, not a hang
		s.mu.Lock()
		s.flight = nil
		s.mu.Unlock()
		close(f.done)
	}()
	f.mfs, f.err = s.g.Gather()
	return f.mfs, f.err
}

// ShareResponses wraps h, a handler of /metrics, so that requests that
// overlap and ask for the same thing (method, URI and Accept) share one
// answer: h runs once, its response is kept while it runs, and the
// requests that arrived meanwhile get a copy of it, the encoding done once.
// With reuse > 0 a complete 200 answer is also kept after it is written,
// and an identical request that comes less than reuse after h began
// making it gets a copy too, without h running: what it is served is at
// most reuse older than when it asked (plus, as with Shared, the part of
// a gather already under way when h began). A scraper that sends
// Cache-Control: no-cache (or max-age=0) is never served a kept answer.
// reuse must stay below the shortest interval anyone scrapes at (MaxReuse
// at most): then each scraper still sees every sample fresh, and only
// scrapers that come close together (a Prometheus pair, an agent, curl)
// share one gather. At most maxKept answers are kept, and one is dropped
// when a later request finds it expired.
//
// Compression is ShareResponses' too, done once per answer: h never sees
// Accept-Encoding (so promhttp answers uncompressed), and the requests that
// accept gzip get the answer gzipped, at gzip's best speed (a scrape of
// hundreds of kilobytes on loopback or a LAN gains more from a fast
// compression than from a small one). h must answer from method, URI and
// Accept alone (as promhttp's handlers do): the first request's context
// and other headers decide for all. Each request that waits for another's
// response is counted in shardvisor_scrapes_shared_total, each served a
// kept one in shardvisor_scrapes_reused_total, both registered with reg.
func ShareResponses(h http.Handler, reuse time.Duration, reg prometheus.Registerer) http.Handler {
	s := &sharedHandler{h: h, reuse: min(reuse, MaxReuse), flights: map[string]*response{}, kept: map[string]*response{},
		shared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_scrapes_shared_total",
			Help: "Scrapes of /metrics that waited for the response of an identical scrape under way when they came, instead of asking the clusters again.",
		}),
		reused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_scrapes_reused_total",
			Help: "Scrapes of /metrics answered with the response of an identical scrape begun less than -scrape-reuse before, instead of asking the clusters again.",
		})}
	reg.MustRegister(s.shared, s.reused)
	return s
}

// MaxReuse is the longest reuse ShareResponses takes (a longer one is cut
// to it): one second, Prometheus' shortest usual scrape interval.
const MaxReuse = time.Second

// maxKept bounds the answers ShareResponses keeps for reuse: one per
// distinct URI and Accept, of which a Prometheus, an agent and a browser
// send a few.
const maxKept = 8

type sharedHandler struct {
	h              http.Handler
	reuse          time.Duration
	shared, reused prometheus.Counter
	mu             sync.Mutex
	flights        map[string]*response // by key, while h runs
	kept           map[string]*response // by key, complete 200 answers begun less than reuse ago (or expired, not yet dropped)
}

// response is what h answered, once done is closed; gzipped is made from
// it by the first request that wants it.
type response struct {
	done   chan struct{}
	began  time.Time // when h began making it
	status int
	header http.Header
	body   bytes.Buffer

	gzipOnce sync.Once
	gzipped  []byte // nil if gzip did not fit this answer
}

func (r *response) Header() http.Header { return r.header }

func (r *response) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

func (r *response) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

// gzip returns the body gzipped, or nil when it is to be sent as it is:
// h encoded it itself, or it is not an answer worth compressing.
func (r *response) gzip() []byte {
	r.gzipOnce.Do(func() {
		if r.header.Get("Content-Encoding") != "" || r.body.Len() < 1024 {
			return
		}
		var buf bytes.Buffer
		buf.Grow(r.body.Len() / 8)
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level: no error
		zw.Write(r.body.Bytes())                           // to a bytes.Buffer: no error
		zw.Close()
		r.gzipped = buf.Bytes()
	})
	return r.gzipped
}

func (r *response) writeTo(w http.ResponseWriter, gzipOK bool) {
	h := w.Header()
	for k, v := range r.header {
		h[k] = v
	}
	body := r.body.Bytes()
	if gzipOK {
		if z := r.gzip(); z != nil {
			body = z
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(r.status)
	w.Write(body)
}

// acceptsGzip tells whether an Accept-Encoding accepts gzip: listed (or
// "*"), and not with q=0.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "*" {
				continue
			}
			if q, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(params)), "q="); ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}

// wantsFresh tells whether a request's Cache-Control forbids answering it
// from a kept response: no-cache, or max-age=0.
func wantsFresh(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			switch d := strings.ToLower(strings.TrimSpace(part)); {
			case d == "no-cache", d == "no-store":
				return true
			case strings.HasPrefix(d, "max-age="):
				if n, err := strconv.Atoi(strings.TrimPrefix(d, "max-age=")); err == nil && n == 0 {
					return true
				}
			}
		}
	}
	return false
}

func (s *sharedHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	key := strings.Join([]string{req.Method, req.URL.RequestURI(), strings.Join(req.Header.Values("Accept"), ",")}, "\x00")
	gzipOK := acceptsGzip(req.Header.Values("Accept-Encoding"))
	now := time.Now()
	s.mu.Lock()
	if f, ok := s.flights[key]; ok {
		s.mu.Unlock()
		s.shared.Inc()
		select {
		case <-f.done:
			f.writeTo(w, gzipOK)
		case <-req.Context().Done(): // the scraper gave up
		}
		return
	}
	for k, f := range s.kept {
		if now.Sub(f.began) >= s.reuse {
			delete(s.kept, k)
		}
	}
	if f, ok := s.kept[key]; ok && !wantsFresh(req.Header.Values("Cache-Control")) {
		s.mu.Unlock()
		s.reused.Inc()
		f.writeTo(w, gzipOK)
		return
	}
	f := &response{done: make(chan struct{}), began: now, header: http.Header{}}
	s.flights[key] = f
	s.mu.Unlock()
	plain := req.Clone(req.Context())
	plain.Header.Del("Accept-Encoding")
	func() {
		completed := false
		defer func() { // also when h panics: the waiters get a 500, not a hang
			switch {
			case !completed:
				f.status = http.StatusInternalServerError
				f.header, f.body = http.Header{}, bytes.Buffer{}
			case f.status == 0:
				f.status = http.StatusOK
			}
			s.mu.Lock()
			delete(s.flights, key)
			if _, had := s.kept[key]; completed && f.status == http.StatusOK && s.reuse > 0 && (had || len(s.kept) < maxKept) {
				s.kept[key] = f
			}
			s.mu.Unlock()
			close(f.done)
		}()
		s.h.ServeHTTP(f, plain)
		completed = true
	}()
	f.writeTo(w, gzipOK)
}
