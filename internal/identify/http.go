package identify

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The identify queue can be shared by supervisors on several machines over
// HTTP, with the protocol of twilight's gateway-queue: GET /?shard=N is
// answered 200 when shard N may send IDENTIFY, and the caller identifies at
// once. Any client of that protocol can use a shardvisor queue, and a
// shardvisor can use any server of it.
//
// A caller that adds report=1 is answered with a lease id in the
// Shardvisor-Lease header and reports what became of the grant with
// POST /done?lease=ID&sent=1 (or sent=0 when it did not identify): the
// bucket then stays busy until the IDENTIFY really left, exactly as for
// the supervisor's own children, however long the caller took to dial.

// LeaseHeader carries a reporting caller's lease id.
const LeaseHeader = "Shardvisor-Lease"

// Handler serves q over HTTP. A grant to a caller that does not report
// counts as sent slack after the answer was written: the time the caller
// may take to reach Discord (dial, TLS, HELLO) before its IDENTIFY.
func Handler(q *Queue, slack time.Duration, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var (
		mu     sync.Mutex
		leases = map[string]*lease{}
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/done" {
			id := r.URL.Query().Get("lease")
			mu.Lock()
			l, ok := leases[id]
			delete(leases, id)
			mu.Unlock()
			if !ok {
				http.Error(w, "identify queue: no such lease (reported already, or expired)\n", http.StatusNotFound)
				return
			}
			if r.URL.Query().Get("sent") == "0" {
				l.Cancel()
			} else {
				l.Sent()
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Method != http.MethodGet || r.URL.Path != "/" {
			http.Error(w, "identify queue: GET /?shard=N\n", http.StatusNotFound)
			return
		}
		shard, err := strconv.Atoi(r.URL.Query().Get("shard"))
		if err != nil || shard < 0 {
			http.Error(w, fmt.Sprintf("identify queue: shard %q is not a shard id\n", r.URL.Query().Get("shard")), http.StatusBadRequest)
			return
		}
		l, err := q.Acquire(r.Context(), shard)
		if err != nil {
			return // the caller went away
		}
		if d := time.Until(l.NotBefore()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				l.Cancel()
				return
			}
		}
		report := r.URL.Query().Get("report") == "1"
		if report {
			id := newLeaseID()
			mu.Lock()
			leases[id] = l.(*lease)
			mu.Unlock()
			// The queue counts an unreported lease as sent at its timeout;
			// forget the id a little after that.
			time.AfterFunc(q.cfg.LeaseTimeout+time.Minute, func() {
				mu.Lock()
				delete(leases, id)
				mu.Unlock()
			})
			w.Header().Set(LeaseHeader, id)
		}
		w.WriteHeader(http.StatusOK)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if !report {
			l.(*lease).sentLater(time.Now().Add(slack))
		}
		logger.Debug("identify granted over HTTP", "shard_id", shard, "remote", r.RemoteAddr, "report", report)
	})
}

func newLeaseID() string {
	var b [16]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DefaultSlack is Handler's default slack. A caller granted over HTTP still
// has to fetch the gateway URL, dial (TLS to Discord) and read HELLO before
// its IDENTIFY leaves: a few hundred milliseconds on a good day, and that
// time does not shrink with the interval. Against Discord's 5 s this makes
// HTTP grants of one bucket at least 6 s apart, the spacing twilight's own
// queue uses; local leases, whose holders report the moment they send, stay
// exact.
const DefaultSlack = time.Second

// Remote is an Acquirer backed by a queue served over HTTP (a shardvisor's,
// or twilight's gateway-queue). It retries, with backoff, until it gets an
// answer or its context ends: a queue that restarts must not fail shards.
type Remote struct {
	url    *url.URL
	client *http.Client
	log    *slog.Logger
	wg     sync.WaitGroup // reports under way
}

// NewRemote returns a client of the queue at raw.
func NewRemote(raw string, client *http.Client, logger *slog.Logger) (*Remote, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("identify queue url %q: want http(s)://host[:port][/path]", raw)
	}
	if client == nil {
		client = &http.Client{} // no timeout: an answer may take as long as the queue is
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Remote{url: u, client: client, log: logger}, nil
}

// Acquire implements Acquirer.
func (r *Remote) Acquire(ctx context.Context, shard int) (Lease, error) {
	u := *r.url
	q := u.Query()
	q.Set("shard", strconv.Itoa(shard))
	q.Set("report", "1")
	u.RawQuery = q.Encode()
	if u.Path == "" {
		u.Path = "/"
	}
	delay := 100 * time.Millisecond
	for {
		id, err := r.ask(ctx, u.String())
		if err == nil {
			if id == "" { // a queue that takes no reports (twilight's)
				return granted{at: time.Now()}, nil
			}
			return &remoteLease{r: r, id: id, at: time.Now()}, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("acquire identify for shard %d: %w", shard, context.Cause(ctx))
		}
		wait := delay/2 + rand.N(delay/2+1)
		r.log.Warn("identify queue unreachable; retrying", "shard_id", shard, "url", r.url.Redacted(), "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("acquire identify for shard %d: %w", shard, context.Cause(ctx))
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func (r *Remote) ask(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return "", errors.New("identify queue answered " + resp.Status)
	}
	return resp.Header.Get(LeaseHeader), nil
}

// Wait blocks until every report under way has been sent or given up.
func (r *Remote) Wait() { r.wg.Wait() }

// remoteLease reports back to the queue that granted it.
type remoteLease struct {
	r    *Remote
	id   string
	at   time.Time
	done atomic.Bool
}

func (l *remoteLease) NotBefore() time.Time { return l.at }
func (l *remoteLease) Sent()                { l.report(true) }
func (l *remoteLease) SentAt(time.Time)     { l.report(true) }
func (l *remoteLease) Cancel()              { l.report(false) }

// report tells the queue in the background: Sent is called with locks held.
// A report that cannot be delivered leaves the lease to expire there, which
// only delays that bucket.
func (l *remoteLease) report(sent bool) {
	if !l.done.CompareAndSwap(false, true) {
		return
	}
	u := *l.r.url
	u.Path = strings.TrimSuffix(u.Path, "/") + "/done"
	q := url.Values{"lease": {l.id}, "sent": {"0"}}
	if sent {
		q.Set("sent", "1")
	}
	u.RawQuery = q.Encode()
	l.r.wg.Add(1)
	go func() {
		defer l.r.wg.Done()
		for attempt := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
			resp, err := l.r.client.Do(req)
			cancel()
			if err == nil {
				resp.Body.Close()
				return
			}
			l.r.log.Warn("report identify to the queue", "attempt", attempt+1, "err", err)
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
	}()
}

// granted is a permission from a remote queue: it counted the IDENTIFY as
// sent when it answered, so there is nothing to report back.
type granted struct{ at time.Time }

func (g granted) NotBefore() time.Time { return g.at }
func (granted) Sent()                  {}
func (granted) SentAt(time.Time)       {}
func (granted) Cancel()                {}
