package discordtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// benchClient is a raw gateway client for benchmarks: no test helpers, no
// per-frame decoding beyond what is needed.
type benchClient struct{ ws *websocket.Conn }

func benchIdentify(ctx context.Context, srv *Server, shard, count int) (*benchClient, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.DialContext(ctx, srv.GatewayURL()+"?v=10&encoding=json", nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil { // HELLO
		ws.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	b, _ := json.Marshal(identifyPayloadFor(srv.Token(), shard, count, discordgo.IntentsGuilds, false))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		ws.Close()
		return nil, fmt.Errorf("identify: %w", err)
	}
	_, m, err := ws.ReadMessage()
	if err != nil || len(m) < 20 || string(m[:13]) != `{"t":"READY",` {
		ws.Close()
		return nil, fmt.Errorf("ready: %q %v", truncate(string(m), 40), err)
	}
	ws.SetReadDeadline(time.Time{})
	return &benchClient{ws}, nil
}

// openSessions identifies n shards of count n, one dialer per identify
// bucket (buckets = max_concurrency) so that a bucket's IDENTIFYs arrive in
// order.
func openSessions(b *testing.B, srv *Server, n, buckets int) []*benchClient {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clients := make([]*benchClient, n)
	var wg sync.WaitGroup
	errs := make(chan error, buckets)
	for w := range buckets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += buckets {
				c, err := benchIdentify(ctx, srv, i, n)
				if err != nil {
					errs <- fmt.Errorf("shard %d: %w", i, err)
					return
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		closeClients(clients)
		b.Fatal(err)
	}
	return clients
}

func closeClients(cs []*benchClient) {
	for _, c := range cs {
		if c != nil {
			c.ws.Close()
		}
	}
}

// BenchmarkConcurrentSessions opens `sessions` live sessions at once (one
// shard each, max_concurrency 16, no pacing) and reports how fast they were
// established and what they cost in memory, both sides of the socket in one
// process.
func BenchmarkConcurrentSessions(b *testing.B) {
	sessions := 8000
	// Both ends of every socket live in this process: two descriptors each.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(2*sessions+256) {
		sessions = max(16, int(lim.Cur-256)/2/16*16)
		b.Logf("open file limit %d: %d sessions", lim.Cur, sessions)
	}
	for range b.N {
		srv, err := NewServer(Options{Guilds: 2 * sessions, Shards: sessions, MaxConcurrency: 16, IdentifyInterval: 1, SessionStartLimit: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		clients := openSessions(b, srv, sessions, 16)
		took := time.Since(start)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := srv.WaitFor(ctx, func(r Record) bool {
			live := 0
			for _, l := range r.Shards {
				live += l.Live
			}
			return live == sessions
		})
		cancel()
		if err != nil {
			b.Fatalf("not all live: %v", err)
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		// Every session must still answer: one heartbeat each.
		hb := []byte(`{"op":1,"d":null}`)
		for _, c := range clients {
			c.ws.SetWriteDeadline(time.Now().Add(time.Minute))
			c.ws.SetReadDeadline(time.Now().Add(time.Minute))
			if err := c.ws.WriteMessage(websocket.TextMessage, hb); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range clients {
			for {
				_, m, err := c.ws.ReadMessage()
				if err != nil {
					b.Fatal(err)
				}
				if string(m) == heartbeatACK {
					break
				}
			}
		}
		b.ReportMetric(float64(sessions), "sessions")
		b.ReportMetric(float64(sessions)/took.Seconds(), "sessions/s")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(sessions), "heapB/session")
		b.ReportMetric(float64(r.MaxLive), "maxlive")
		closeClients(clients)
		srv.Close()
	}
}

// BenchmarkDispatchThroughput runs the event generator flat out for a few
// live sessions read by raw clients that only count frames, and reports the
// MESSAGE_CREATE dispatches per second delivered.
func BenchmarkDispatchThroughput(b *testing.B) {
	const (
		shards = 8
		window = 3 * time.Second
	)
	for range b.N {
		srv, err := NewServer(Options{Guilds: 64, Shards: shards, MaxConcurrency: shards, IdentifyInterval: 1, EventRate: 1e7})
		if err != nil {
			b.Fatal(err)
		}
		clients := openSessions(b, srv, shards, shards)
		var got atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(window)
		start := time.Now()
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.ws.SetReadDeadline(deadline)
				n := int64(0)
				for {
					_, r, err := c.ws.NextReader()
					if err != nil {
						break
					}
					io.Copy(io.Discard, r)
					n++
				}
				got.Add(n)
			}()
		}
		wg.Wait()
		el := time.Since(start)
		srv.SetEventRate(0)
		b.ReportMetric(float64(got.Load())/el.Seconds(), "dispatches/s")
		b.ReportMetric(shards, "sessions")
		closeClients(clients)
		srv.Close()
	}
}
