package ratelimit

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkTicket is one Ticket and its Report, on 64 channels of a known
// 5 per 5 s bucket, at 40 requests per second of a fake clock (under the
// global limit, so that nothing queues up): the cost the supervisor pays
// per REST request of the bot.
func BenchmarkTicket(b *testing.B) {
	l, err := New(Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = RouteKey("POST", "/api/v10/channels/"+strconv.Itoa(100000+i)+"/messages")
	}
	now := time.Now()
	r := Response{Status: 200, Bucket: "abcd", Limit: 5, Remaining: 4, ResetAfter: 5 * time.Second}
	for _, k := range keys {
		l.Ticket(k, now)
		l.Report(k, r, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now = now.Add(25 * time.Millisecond)
		k := keys[i%len(keys)]
		l.Ticket(k, now)
		l.Report(k, r, now)
	}
}

// BenchmarkTicketParallel is BenchmarkTicket from every CPU at once: the
// limiter's lock under contention (64 channels each, so that nothing queues up).
func BenchmarkTicketParallel(b *testing.B) {
	l, err := New(Config{Global: 1 << 20}, nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var clock atomic.Int64
	r := Response{Status: 200, Bucket: "abcd", Limit: 5, Remaining: 4, ResetAfter: 5 * time.Second}
	var worker atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := worker.Add(1)
		keys := make([]string, 64)
		for i := range keys {
			keys[i] = RouteKey("POST", "channels/"+strconv.FormatInt(w*1000+int64(i), 10)+"/messages")
		}
		for i := 0; pb.Next(); i++ {
			now := start.Add(time.Duration(clock.Add(int64(20 * time.Millisecond))))
			k := keys[i%len(keys)]
			l.Ticket(k, now)
			l.Report(k, r, now)
		}
	})
}
