package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The REST limits can be shared by supervisors on several machines over
// HTTP: one service (`shardvisor identify-queue`) holds a Limiter, and
// each supervisor asks it for its clusters' tickets (Remote) instead of
// holding limits of its own. Every call is a POST with a JSON body of at
// most MaxBody bytes:
//
//	POST /rest/ticket  {"key": K}                      200 {"wait_ns": N}
//	POST /rest/report  {"key": K, "status": S, ...}    204
//	POST /rest/cancel  {"key": K}                      204
//
// K is a key from RouteKey (CheckKey says which); a report's other fields
// are Response's, as in ReportRequest. A request the service refuses is
// answered 400 (404, 405, 413) with a line of text that names the field.
// Nothing secret passes: a key carries a digest where a webhook's or an
// interaction's token was, and the bot's token is not needed.

// Paths of the REST limits service.
const (
	PathTicket = "/rest/ticket"
	PathReport = "/rest/report"
	PathCancel = "/rest/cancel"
)

// MaxBody bounds the body of a request to the service.
const MaxBody = 4 << 10

// maxWait bounds the waits and resets that pass: Discord's longest
// buckets reset in hours, not days.
const maxWait = 24 * time.Hour

// ReportRequest is the body of every call: the key alone for a ticket or
// a cancel, the answer's status and rate limit headers too for a report
// (the fields of Response, durations in nanoseconds).
type ReportRequest struct {
	Key string `json:"key"`
	Response
}

// TicketAnswer is the answer to a ticket: send after Wait.
type TicketAnswer struct {
	Wait time.Duration `json:"wait_ns"`
}

// check returns an error that names the first field that is not one an
// answer of Discord's could have given.
func (m *ReportRequest) check() error {
	printable := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] <= ' ' || s[i] == 0x7f {
				return false
			}
		}
		return true
	}
	switch {
	case m.Status != 0 && (m.Status < 100 || m.Status > 599):
		return fmt.Errorf(`"status": %d is not an HTTP status (0: no answer)`, m.Status)
	case len(m.Bucket) > 128 || !printable(m.Bucket):
		return errors.New(`"bucket": longer than 128 bytes, or not printable`)
	case m.Limit < 0 || m.Limit > 1<<30:
		return fmt.Errorf(`"limit": %d is out of range`, m.Limit)
	case m.Remaining < 0 || m.Remaining > 1<<30:
		return fmt.Errorf(`"remaining": %d is out of range`, m.Remaining)
	case m.ResetAfter < 0 || m.ResetAfter > maxWait:
		return fmt.Errorf(`"reset_after_ns": %d is not between 0 and a day`, m.ResetAfter)
	case m.RetryAfter < 0 || m.RetryAfter > maxWait:
		return fmt.Errorf(`"retry_after_ns": %d is not between 0 and a day`, m.RetryAfter)
	case len(m.Scope) > 32 || !printable(m.Scope):
		return errors.New(`"scope": longer than 32 bytes, or not printable`)
	}
	return nil
}

// Handler serves l over HTTP (the protocol above) for supervisors
// elsewhere: their tickets, reports and cancels are taken exactly as
// those of the supervisor's own clusters, with the time of l's clock. It
// serves the three paths and answers 404 to any other.
func Handler(l *Limiter, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &handler{l: l, log: logger}
}

type handler struct {
	l   *Limiter
	log *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch path {
	case PathTicket, PathReport, PathCancel:
	default:
		http.Error(w, "rest limits: POST "+PathTicket+", "+PathReport+" or "+PathCancel+"\n", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "rest limits: "+path+" takes POST\n", http.StatusMethodNotAllowed)
		return
	}
	var m ReportRequest
	if code, err := decodeBody(w, r, &m); err != nil {
		h.refuse(w, r, code, err)
		return
	}
	if err := CheckKey(m.Key); err != nil {
		h.refuse(w, r, http.StatusBadRequest, fmt.Errorf(`"key": %w`, err))
		return
	}
	now := h.l.cfg.Now()
	switch path {
	case PathTicket:
		wait := h.l.Ticket(m.Key, now)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(TicketAnswer{Wait: wait})
	case PathReport:
		if err := m.check(); err != nil {
			h.refuse(w, r, http.StatusBadRequest, err)
			return
		}
		h.l.Report(m.Key, m.Response, now)
		w.WriteHeader(http.StatusNoContent)
	case PathCancel:
		h.l.Cancel(m.Key, now)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, code int, err error) {
	h.log.Debug("rest limits: request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "status", code, "err", err)
	http.Error(w, "rest limits: "+err.Error()+"\n", code)
}

// decodeBody reads one JSON object of at most MaxBody bytes into v; the
// status is that of the refusal when it cannot.
func decodeBody(w http.ResponseWriter, r *http.Request, v *ReportRequest) (int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		return 0, nil
	}
	var (
		tooBig  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body: more than %d bytes", MaxBody)
	case errors.As(err, &typeErr) && typeErr.Field != "":
		// The embedded Response is no level of the JSON: its fields are the body's.
		field := strings.TrimPrefix(typeErr.Field, "Response.")
		return http.StatusBadRequest, fmt.Errorf("%q: a JSON %s is not a %s", field, typeErr.Value, typeErr.Type)
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, errors.New(`body: empty; want {"key": ...}`)
	}
	return http.StatusBadRequest, fmt.Errorf("body: not a JSON object: %w", err)
}

// ErrRejected marks a ticket the service refused as a bad request (400,
// 413), or would refuse (a key CheckKey does not accept): the service
// answers, this request is wrong. Any other answer but 200 (a 404 from a
// server that does not serve REST limits, say) is an ordinary error: the
// service is not there.
var ErrRejected = errors.New("rest limits service refused the request")

// Timeouts and bounds of a Remote.
const (
	remoteQueue         = 1024            // reports and cancels waiting to be sent
	remoteSenders       = 8               // sent at once
	remoteReportTimeout = 5 * time.Second // for one report
	remoteWarnEvery     = 10 * time.Second
)

// Remote is a client of a REST limits service (Handler) at a base URL.
// Ticket waits for the answer as long as its context lets it; Report and
// Cancel never block: they queue the call (at most 1,024 waiting, eight
// sent at once; past that it is dropped and counted) and a report that
// fails is not sent again: its ticket expires on the service after its
// TTL, and the bucket learns from the next answer. Its methods are safe
// for concurrent use.
type Remote struct {
	base                            *url.URL
	ticketURL, reportURL, cancelURL string
	client                          *http.Client
	ownClient                       bool
	log                             *slog.Logger
	queue                           chan remoteCall
	ctx                             context.Context
	stop                            context.CancelFunc
	startOnce                       sync.Once // the senders start with the first report
	wg                              sync.WaitGroup
	dropped, failed                 atomic.Uint64
	lastWarn                        atomic.Int64 // unix nanoseconds of the last failed report logged
}

type remoteCall struct {
	url  string
	body []byte
}

// NewRemote returns a client of the service at baseURL (http or https,
// with a host; the paths are appended to its path) that sends with client
// (nil: one of its own that keeps connections open for many tickets at
// once). The senders of reports start with the first one; Close stops
// them.
func NewRemote(baseURL string, client *http.Client, logger *slog.Logger) (*Remote, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("rest limits url %q: want http(s)://host[:port][/path]", baseURL)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Remote{base: u, client: client, log: logger, queue: make(chan remoteCall, remoteQueue)}
	if r.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64 // tickets of many requests at once; the default 2 would dial for each
		r.client, r.ownClient = &http.Client{Transport: t}, true
	}
	at := func(p string) string {
		v := *u
		v.Path = strings.TrimSuffix(u.Path, "/") + p
		v.RawPath = ""
		return v.String()
	}
	r.ticketURL, r.reportURL, r.cancelURL = at(PathTicket), at(PathReport), at(PathCancel)
	r.ctx, r.stop = context.WithCancel(context.Background())
	return r, nil
}

// URL is the service's base URL, its password (if any) redacted.
func (r *Remote) URL() string { return r.base.Redacted() }

// Ticket asks the service for a ticket for key and returns the wait it
// gave, counted from its answer. The error wraps ErrRejected when the
// service answers but refuses the request as bad (or key is not one it
// takes); any other error means the service did not answer in time, or
// not as one.
func (r *Remote) Ticket(ctx context.Context, key string) (time.Duration, error) {
	if err := CheckKey(key); err != nil {
		return 0, fmt.Errorf("rest ticket: key: %w: %w", err, ErrRejected)
	}
	body, _ := json.Marshal(ReportRequest{Key: key})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.ticketURL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("rest ticket: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("rest ticket: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	switch {
	case err != nil:
		return 0, fmt.Errorf("rest ticket: read the answer: %w", err)
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestEntityTooLarge:
		return 0, fmt.Errorf("rest ticket: %s: %s: %w", resp.Status, firstLine(b), ErrRejected)
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("rest ticket: the service answered %s", resp.Status)
	}
	var a TicketAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return 0, fmt.Errorf("rest ticket: the answer: %w", err)
	}
	if a.Wait < 0 || a.Wait > maxWait {
		return 0, fmt.Errorf("rest ticket: a wait of %v", a.Wait)
	}
	return a.Wait, nil
}

// Report tells the service, in the background, the answer to a request
// of key it gave a ticket for; r.Status 0 is Cancel.
func (r *Remote) Report(key string, resp Response) {
	if resp.Status == 0 {
		r.Cancel(key)
		return
	}
	m := ReportRequest{Key: key, Response: resp}
	if CheckKey(key) != nil || m.check() != nil { // the service would refuse it
		r.dropped.Add(1)
		return
	}
	body, _ := json.Marshal(m)
	r.enqueue(remoteCall{url: r.reportURL, body: body})
}

// Cancel gives the service back, in the background, a ticket of key whose
// request got no answer.
func (r *Remote) Cancel(key string) {
	if CheckKey(key) != nil {
		r.dropped.Add(1)
		return
	}
	body, _ := json.Marshal(ReportRequest{Key: key})
	r.enqueue(remoteCall{url: r.cancelURL, body: body})
}

func (r *Remote) enqueue(c remoteCall) {
	r.startOnce.Do(func() {
		for range remoteSenders {
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.send() }()
		}
	})
	if r.ctx.Err() != nil {
		r.dropped.Add(1)
		return
	}
	select {
	case r.queue <- c:
	default:
		r.dropped.Add(1)
	}
}

// Dropped is how many reports and cancels were never sent: the queue was
// full, the Remote closed, or the service would have refused them.
func (r *Remote) Dropped() uint64 { return r.dropped.Load() }

// Failed is how many reports and cancels were sent but not taken: the
// service did not answer, or answered with an error.
func (r *Remote) Failed() uint64 { return r.failed.Load() }

// send sends queued reports until Close.
func (r *Remote) send() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case c := <-r.queue:
			if err := r.post(c); err != nil && r.ctx.Err() == nil {
				r.failed.Add(1)
				now := time.Now().UnixNano()
				if last := r.lastWarn.Load(); now-last >= int64(remoteWarnEvery) && r.lastWarn.CompareAndSwap(last, now) {
					r.log.Warn("rest limits service: a report was not taken; its ticket expires there", "url", r.URL(), "failed", r.failed.Load(), "err", err)
				}
			}
		}
	}
}

func (r *Remote) post(c remoteCall) error {
	ctx, cancel := context.WithTimeout(r.ctx, remoteReportTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the service answered %s: %s", resp.Status, firstLine(b))
	}
	return nil
}

// Close stops the senders; reports still queued are dropped (counted).
// Ticket still works, Report and Cancel drop.
func (r *Remote) Close() {
	r.stop()
	r.startOnce.Do(func() {}) // none start after
	r.wg.Wait()
	r.dropped.Add(uint64(len(r.queue)))
	for len(r.queue) > 0 {
		<-r.queue
	}
	if r.ownClient {
		r.client.CloseIdleConnections()
	}
}

// RegisterMetrics registers the Remote's counters with reg.
func (r *Remote) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shardvisor_rest_remote_reports_dropped_total",
			Help: "REST reports and cancels for the REST limits service (-rest-limits-url) never sent: their queue was full, or the supervisor stopped.",
		}, func() float64 { return float64(r.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shardvisor_rest_remote_reports_failed_total",
			Help: "REST reports and cancels the REST limits service (-rest-limits-url) did not take: no answer, or an error.",
		}, func() float64 { return float64(r.Failed()) }))
}

// firstLine is the start of an error answer, for an error message.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.TrimSpace(s)
}
