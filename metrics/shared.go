package metrics

import (
	"bytes"
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
// overlap and ask for the same thing (method, URI, Accept and
// Accept-Encoding) share one answer: h runs once, its response is kept
// while it runs, and the requests that arrived meanwhile get a copy of it,
// the encoding and compression done once. As with Shared, nothing is kept
// once the answer is written. h must answer from those four alone (as
// promhttp's handlers do): the first request's context and other headers
// decide for all. Each request that waits for another's response is counted
// in shardvisor_scrapes_shared_total, registered with reg.
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

// response is what h answered, once done is closed.
type response struct {
	done   chan struct{}
	status int
	header http.Header
	body   bytes.Buffer
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

func (r *response) writeTo(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range r.header {
		h[k] = v
	}
	h.Set("Content-Length", strconv.Itoa(r.body.Len()))
	w.WriteHeader(r.status)
	w.Write(r.body.Bytes())
}

func (s *sharedHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	key := strings.Join([]string{req.Method, req.URL.RequestURI(),
		strings.Join(req.Header.Values("Accept"), ","), strings.Join(req.Header.Values("Accept-Encoding"), ",")}, "\x00")
	s.mu.Lock()
	if f, ok := s.flights[key]; ok {
		s.mu.Unlock()
		s.shared.Inc()
		select {
		case <-f.done:
			f.writeTo(w)
		case <-req.Context().Done(): // the scraper gave up
		}
		return
	}
	f := &response{done: make(chan struct{}), header: http.Header{}}
	s.flights[key] = f
	s.mu.Unlock()
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
		s.h.ServeHTTP(f, req)
		completed = true
	}()
	f.writeTo(w)
}
