package identify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestHTTPQueueWaitsForReports: a reporting client's grant keeps its bucket
// busy until the report, however late; the next grant of the bucket comes
// an interval after it.
func TestHTTPQueueWaitsForReports(t *testing.T) {
	const interval = 50 * time.Millisecond
	q, _ := New(Config{MaxConcurrency: 1, Interval: interval, Margin: -1}, nil, nil)
	srv := httptest.NewServer(Handler(q, time.Millisecond, nil))
	defer srv.Close()
	r, _ := NewRemote(srv.URL, srv.Client(), nil)
	defer r.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := r.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.(*remoteLease); !ok {
		t.Fatalf("a shardvisor queue's grant is a %T, not a reporting lease", l)
	}
	next := make(chan time.Time, 1)
	finished := make(chan struct{})
	defer func() { <-finished }() // before r.Wait: its report must have begun
	go func() {
		defer close(finished)
		l2, err := r.Acquire(ctx, 1)
		if err == nil {
			l2.Cancel()
			next <- l2.NotBefore()
		}
	}()
	select { // a slow dial: the second waits, though the slack is 1 ms
	case <-next:
		t.Fatal("the bucket's next grant came before the first was reported")
	case <-time.After(3 * interval):
	}
	sent := time.Now()
	l.Sent()
	if got := (<-next).Sub(sent); got < interval-5*time.Millisecond {
		t.Fatalf("next grant %v after the report, want ≥ %v", got, interval)
	}
}

// TestHTTPQueuePaces serves callers that do not report, as twilight's
// clients do: two buckets, eight shards asking at once. On the fake clock
// the answers of one bucket are exactly interval + slack apart.
func TestHTTPQueuePaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, slack = 60 * time.Millisecond, 10 * time.Millisecond
		q, _ := New(Config{MaxConcurrency: 2, Interval: interval, Margin: -1}, nil, nil)
		h := Handler(q, slack, nil)
		start := time.Now()
		var mu sync.Mutex
		at := map[int][]time.Duration{}
		var wg sync.WaitGroup
		for shard := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?shard="+strconv.Itoa(shard), nil))
				if rec.Code != http.StatusOK || rec.Header().Get(LeaseHeader) != "" {
					t.Errorf("shard %d: %d, lease %q", shard, rec.Code, rec.Header().Get(LeaseHeader))
				}
				mu.Lock()
				at[shard%2] = append(at[shard%2], time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
		for b, times := range at {
			slices.Sort(times)
			want := []time.Duration{0, interval + slack, 2 * (interval + slack), 3 * (interval + slack)}
			if !slices.Equal(times, want) {
				t.Errorf("bucket %d answered at %v, want %v", b, times, want)
			}
		}
	})
}

func TestHTTPQueueBadRequests(t *testing.T) {
	q, _ := New(Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
	h := Handler(q, 0, nil)
	for _, tc := range []struct {
		target string
		want   int
	}{
		{"/?shard=x", http.StatusBadRequest},
		{"/?shard=-1", http.StatusBadRequest},
		{"/", http.StatusBadRequest},
		{"/other?shard=1", http.StatusNotFound},
		{"POST /done?lease=nope", http.StatusNotFound},
	} {
		method, target, ok := strings.Cut(tc.target, " ")
		if !ok {
			method, target = http.MethodGet, tc.target
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		if rec.Code != tc.want {
			t.Errorf("GET %s = %d, want %d", tc.target, rec.Code, tc.want)
		}
	}
}

func TestRemoteRetriesUntilTheQueueAnswers(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls < 3 {
			http.Error(w, "restarting", http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	r, _ := NewRemote(srv.URL+"/queue", srv.Client(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := r.Acquire(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Errorf("%d calls, want 3 (two failures, then the grant)", calls)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := r.Acquire(ctx, 3); err == nil {
		t.Error("Acquire with a done context succeeded")
	}
	if _, err := NewRemote("ftp://x", nil, nil); err == nil {
		t.Error("NewRemote accepted ftp")
	}
}
