package metrics

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"

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
// Compression is ShareResponses' too, done once per answer: h never sees
// Accept-Encoding (so promhttp answers uncompressed), and the requests that
// accept gzip get the answer gzipped, at gzip's best speed (a scrape of
// hundreds of kilobytes on loopback or a LAN gains more from a fast
// compression than from a small one). As with Shared, nothing is kept once
// the answer is written. h must answer from method, URI and Accept alone
// (as promhttp's handlers do): the first request's context and other
// headers decide for all. Each request that waits for another's response
// is counted in shardvisor_scrapes_shared_total, registered with reg.
func ShareResponses(h http.Handler, reg prometheus.Registerer) http.Handler {
	s := &sharedHandler{h: h, flights: map[string]*response{},
		shared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardvisor_scrapes_shared_total",
			Help: "Scrapes of /metrics that waited for the response of an identical scrape under way when they came, instead of asking the clusters again.",
		})}
	reg.MustRegister(s.shared)
	return s
}

type sharedHandler struct {
	h       http.Handler
	shared  prometheus.Counter
	mu      sync.Mutex
	flights map[string]*response // by key, while h runs
}

// response is what h answered, once done is closed; gzipped is made from
// it by the first request that wants it.
type response struct {
	done   chan struct{}
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

func (s *sharedHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	key := strings.Join([]string{req.Method, req.URL.RequestURI(), strings.Join(req.Header.Values("Accept"), ",")}, "\x00")
	gzipOK := acceptsGzip(req.Header.Values("Accept-Encoding"))
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
	f := &response{done: make(chan struct{}), header: http.Header{}}
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
			s.mu.Unlock()
			close(f.done)
		}()
		s.h.ServeHTTP(f, plain)
		completed = true
	}()
	f.writeTo(w, gzipOK)
}
