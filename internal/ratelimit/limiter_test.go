package ratelimit

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	sec    = time.Second
	margin = DefaultMargin
)

// TestGlobalSixteenCallers: 16 callers sending as fast as their tickets
// allow, on routes without a bucket and on many channels, never put more
// than Global requests in any second, and get close to it.
func TestGlobalSixteenCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		sim := newSim(50, map[string]simRoute{"POST channels/:channel/messages": {"msg", 5, 5 * sec}})
		const callers, each = 16, 60
		var wg sync.WaitGroup
		stop := make(chan struct{})
		scraped := make(chan struct{})
		go func() { // a scrape now and then, racing with the callers
			defer close(scraped)
			for {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
					if _, err := f.reg.Gather(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
		for c := range callers {
			wg.Go(func() {
				for i := range each {
					key := RouteKey("GET", "gateway/bot")
					if i%2 == 1 {
						key = RouteKey("POST", "channels/"+strconv.Itoa(1000+c*each+i)+"/messages")
					}
					send(f.l, sim, key, time.Duration(i%5)*10*time.Millisecond)
				}
			})
		}
		wg.Wait()
		close(stop)
		<-scraped
		if sim.limited != 0 {
			t.Errorf("%d requests limited by Discord: %q", sim.limited, sim.log)
		}
		if most := sim.maxPerSecond(); most > 50 {
			t.Errorf("%d requests within one second, limit 50", most)
		}
		t.Logf("960 requests in %v, at most %d in a second", time.Since(sim.start), sim.maxPerSecond())
		// 960 requests at 45 per second, and the probes of the first answers.
		if took := time.Since(sim.start); took > 25*sec {
			t.Errorf("960 requests took %v, want about 21 s", took)
		}
		if v := f.metric(t, "shardvisor_rest_global_waits_total"); v <= 0 {
			t.Errorf("shardvisor_rest_global_waits_total = %v, want > 0", v)
		}
		if s := f.l.Stats(); s.InFlight != 0 || s.Waiting != 0 {
			t.Errorf("Stats = %+v, want nothing in flight", s)
		}
	})
}

// TestBucketSixteenCallers: 16 callers asking at once for a known 5 per 5 s
// bucket get 5 tickets at once and the rest in the following windows, and
// Discord limits none of them.
func TestBucketSixteenCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		sim := newSim(50, map[string]simRoute{"POST channels/:channel/messages": {"msg", 5, 5 * sec}})
		send(f.l, sim, "POST channels/1/messages", 0) // learns the bucket on channel 1

		key := "POST channels/2/messages"
		waits := make([]time.Duration, 16)
		ready := make(chan struct{})
		var wg sync.WaitGroup
		for i := range waits {
			wg.Go(func() {
				<-ready
				waits[i] = f.l.Ticket(key, time.Now())
			})
		}
		close(ready)
		wg.Wait()
		count := map[time.Duration]int{}
		for _, w := range waits {
			count[w]++
		}
		step := 5*sec + margin
		want := map[time.Duration]int{0: 5, step: 5, 2 * step: 5, 3 * step: 1}
		if len(count) != len(want) {
			t.Fatalf("waits %s, want 5 at 0 and the rest every %v", durs(waits), step)
		}
		for w, n := range want {
			if count[w] != n {
				t.Errorf("waits %s: %d of %v, want %d", durs(waits), count[w], w, n)
			}
		}

		// Sent as told, with some latency, Discord takes them all.
		for i, w := range waits {
			wg.Go(func() {
				lat := time.Duration(i%4) * 20 * time.Millisecond
				time.Sleep(w + lat)
				r := sim.do(key, time.Now())
				time.Sleep(lat)
				f.l.Report(key, r, time.Now())
			})
		}
		wg.Wait()
		if sim.limited != 0 {
			t.Errorf("%d requests limited by Discord: %q", sim.limited, sim.log)
		}
		if s := f.l.Stats(); s.InFlight != 0 {
			t.Errorf("Stats = %+v, want none in flight", s)
		}
	})
}

// TestBucketSustained: callers that keep a bucket busy for a minute, with
// varying latency, are never limited by Discord and use most of it.
func TestBucketSustained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		sim := newSim(50, map[string]simRoute{
			"POST channels/:channel/messages":                         {"msg", 5, 5 * sec},
			"PUT channels/:channel/messages/:id/reactions/:emoji/@me": {"react", 1, 250 * time.Millisecond},
		})
		var wg sync.WaitGroup
		var mu sync.Mutex
		sent := 0
		for c := range 16 {
			wg.Go(func() {
				start := time.Now()
				for i := 0; time.Since(start) < 60*sec; i++ {
					key := "POST channels/7/messages"
					if c%2 == 1 {
						key = RouteKey("PUT", "/api/v10/channels/7/messages/"+strconv.Itoa(i)+"/reactions/x/@me")
					}
					send(f.l, sim, key, time.Duration((c*7+i*13)%60)*time.Millisecond)
					mu.Lock()
					sent++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if sim.limited != 0 {
			t.Errorf("%d of %d requests limited by Discord: %q", sim.limited, sent, sim.log)
		}
		// In the first minute, of 12 windows of 5 messages, and of 240
		// reactions (one per 250 ms), about 200 (one per 250 ms and the
		// way back of the answer that tells the reset).
		msgs := sim.taken("POST channels/:channel/messages", 60*sec)
		reacts := sim.taken("PUT channels/:channel/messages/:id/reactions/:emoji/@me", 60*sec)
		t.Logf("in the first minute, %d messages and %d reactions", msgs, reacts)
		if msgs < 55 || msgs > 60 || reacts < 170 || reacts > 240 {
			t.Errorf("in the first minute, %d messages and %d reactions, want 55 to 60 and 170 to 240", msgs, reacts)
		}
	})
}

// TestMajorsIndependent: two channels of one route have buckets of their
// own.
func TestMajorsIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		f.learn("POST channels/1/messages", "msg", 5, 4, 5*sec)
		for i := range 4 {
			if w := f.l.Ticket("POST channels/1/messages", time.Now()); w != 0 {
				t.Fatalf("ticket %d on channel 1: wait %v", i+2, w)
			}
		}
		if w := f.l.Ticket("POST channels/1/messages", time.Now()); w < 5*sec {
			t.Errorf("sixth ticket on channel 1: wait %v, want the next window", w)
		}
		for i := range 5 {
			if w := f.l.Ticket("POST channels/2/messages", time.Now()); w != 0 {
				t.Errorf("ticket %d on channel 2: wait %v, want 0", i+1, w)
			}
		}
	})
}

// TestSharedHash: routes whose answers name the same bucket share its
// state, including a route still probing when it learns so.
func TestSharedHash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		a, b, c := "GET applications/@me", "GET oauth2/applications/@me", "PATCH applications/@me"
		f.learn(a, "app", 3, 2, sec)
		f.learn(b, "app", 3, 1, sec)
		if w := f.l.Ticket(a, time.Now()); w != 0 {
			t.Errorf("third in the window: wait %v, want 0", w)
		}
		if w := f.l.Ticket(b, time.Now()); w < sec {
			t.Errorf("fourth in the window, on the other route: wait %v, want the next window", w)
		}

		// c probes: one now, one a probe later; its answer names "app".
		time.Sleep(5 * sec)
		if w := f.l.Ticket(c, time.Now()); w != 0 {
			t.Errorf("first probe: wait %v", w)
		}
		if w := f.l.Ticket(c, time.Now()); w != DefaultProbe+margin {
			t.Errorf("second probe: wait %v, want %v", w, DefaultProbe+margin)
		}
		f.l.Report(c, Response{Status: 200, Bucket: "app", Limit: 3, Remaining: 2, ResetAfter: sec}, time.Now())
		// Discord allows 2 more before its reset in 1 s; c's second probe
		// is after it, in the next window, which has room for 2 more.
		for _, k := range []string{a, b} {
			if w := f.l.Ticket(k, time.Now()); w != 0 {
				t.Errorf("after c learned, %s: wait %v, want 0", k, w)
			}
		}
		for _, k := range []string{c, a} {
			if w := f.l.Ticket(k, time.Now()); w != sec {
				t.Errorf("past the shared limit, %s: wait %v, want the reset in 1s", k, w)
			}
		}
		if w := f.l.Ticket(b, time.Now()); w < 2*sec {
			t.Errorf("past the next window too: wait %v, want 2s or more", w)
		}
		if s := f.l.Stats(); s.Buckets != 1 || s.Routes != 3 {
			t.Errorf("Stats = %+v, want 1 bucket of 3 routes", s)
		}
	})
}

// TestProbe: a route's first request goes at once, the next ones a probe
// apart until an answer says more; then the bucket's limit applies,
// counting the probes already handed out.
func TestProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		key := "POST channels/1/messages"
		step := DefaultProbe + margin
		for i := range 3 {
			if w := f.l.Ticket(key, time.Now()); w != time.Duration(i)*step {
				t.Errorf("probe %d: wait %v, want %v", i, w, time.Duration(i)*step)
			}
		}
		f.l.Report(key, Response{Status: 200, Bucket: "msg", Limit: 5, Remaining: 4, ResetAfter: 5 * sec}, time.Now())
		// 4 left, 2 of them the probes waiting.
		for i := range 2 {
			if w := f.l.Ticket(key, time.Now()); w != 0 {
				t.Errorf("ticket %d after learning: wait %v, want 0", i, w)
			}
		}
		if w := f.l.Ticket(key, time.Now()); w < 5*sec {
			t.Errorf("past the limit: wait %v, want the next window", w)
		}
	})
}

// TestDiscordSaysLess: an answer with fewer remaining than the model
// expects (requests it did not see) holds tickets until the reset.
func TestDiscordSaysLess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		f.learn("POST channels/1/messages", "msg", 5, 4, 5*sec)
		key := "POST channels/2/messages"
		f.l.Ticket(key, time.Now())
		f.l.Report(key, Response{Status: 200, Bucket: "msg", Limit: 5, Remaining: 0, ResetAfter: 3 * sec}, time.Now())
		if w := f.l.Ticket(key, time.Now()); w != 3*sec {
			t.Errorf("wait %v, want the reset in 3s", w)
		}
		// A 429 closes the bucket until its Retry-After.
		f.l.Ticket("POST channels/3/messages", time.Now())
		f.l.Report("POST channels/3/messages", Response{Status: 429, Bucket: "msg", Limit: 5, ResetAfter: 2 * sec, Scope: ScopeUser, RetryAfter: 2 * sec}, time.Now())
		if w := f.l.Ticket("POST channels/3/messages", time.Now()); w != 2*sec {
			t.Errorf("after a 429: wait %v, want 2s", w)
		}
		if v := f.metric(t, "shardvisor_rest_rate_limited_total", "scope", "user"); v != 1 {
			t.Errorf("429s of scope user = %v, want 1", v)
		}
		if !strings.Contains(f.log.String(), "bucket rate limit hit") {
			t.Errorf("no log line for the 429:\n%s", f.log)
		}
	})
}

// TestGlobal429Pauses: a global 429 pauses every ticket under the global
// limit for its Retry-After, but not interaction callbacks.
func TestGlobal429Pauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		f.l.Report("GET users/@me", Response{Status: 200}, time.Now()) // no bucket
		f.l.Report("GET users/@me", Response{Status: 429, Global: true, Scope: ScopeGlobal, RetryAfter: 3 * sec}, time.Now())
		if w := f.l.Ticket("GET users/@me", time.Now()); w != 3*sec {
			t.Errorf("wait %v, want 3s", w)
		}
		if w := f.l.Ticket("POST channels/9/messages", time.Now()); w != 3*sec {
			t.Errorf("another route: wait %v, want 3s", w)
		}
		if w := f.l.Ticket("POST interactions/1/tok/callback", time.Now()); w != 0 {
			t.Errorf("interaction callback: wait %v, want 0", w)
		}
		if s := f.l.Stats(); !s.GlobalPausedUntil.Equal(time.Now().Add(3 * sec)) {
			t.Errorf("GlobalPausedUntil %v, want in 3s", s.GlobalPausedUntil)
		}
		if !strings.Contains(f.log.String(), "global rate limit hit") {
			t.Errorf("no log line for the global 429:\n%s", f.log)
		}
		time.Sleep(3 * sec)
		if w := f.l.Ticket("GET users/@me", time.Now()); w != 0 {
			t.Errorf("after the pause: wait %v, want 0", w)
		}
		if v := f.metric(t, "shardvisor_rest_rate_limited_total", "scope", "global"); v != 1 {
			t.Errorf("429s of scope global = %v, want 1", v)
		}
	})
}

// TestOutsideGlobal: interaction callbacks and webhook-token routes are
// not held by a full global limit.
func TestOutsideGlobal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{Global: 5})
		f.l.Report("GET gateway/bot", Response{Status: 200}, time.Now()) // no bucket
		for i := range 5 {
			if w := f.l.Ticket("GET gateway/bot", time.Now()); w != 0 {
				t.Fatalf("ticket %d: wait %v", i, w)
			}
		}
		if w := f.l.Ticket("GET gateway/bot", time.Now()); w < sec {
			t.Errorf("past the global limit: wait %v, want a second", w)
		}
		for i := range 20 {
			key := RouteKey("POST", "/api/v10/interactions/"+strconv.Itoa(100+i)+"/tok"+strconv.Itoa(i)+"/callback")
			if w := f.l.Ticket(key, time.Now()); w != 0 {
				t.Errorf("interaction %d: wait %v, want 0", i, w)
			}
			key = RouteKey("POST", "webhooks/42/tok"+strconv.Itoa(i))
			if w := f.l.Ticket(key, time.Now()); w != 0 {
				t.Errorf("follow-up %d: wait %v, want 0", i, w)
			}
		}
	})
}

// TestInvalidSlowdown: invalid answers are counted in the sliding window;
// past SlowAt the limiter logs it, halves the limit of buckets that had
// one, and stops when the window slides past them.
func TestInvalidSlowdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{InvalidLimit: 100, SlowAt: 0.5})
		for range 20 { // not invalid
			f.l.Report("POST channels/5/messages", Response{Status: 429, Bucket: "msg", Limit: 5, Scope: ScopeShared, RetryAfter: sec}, time.Now())
			f.l.Report("GET channels/5", Response{Status: 404}, time.Now())
		}
		for range 50 {
			f.l.Report("GET channels/6", Response{Status: 403}, time.Now())
		}
		if s := f.l.Stats(); s.Invalid != 50 || s.Slowed {
			t.Fatalf("Stats = %+v, want 50 invalid, not slowed", s)
		}
		key := "POST channels/7/messages"
		f.learn(key, "msg", 4, 3, sec)
		f.l.Report(key, Response{Status: 429, Bucket: "msg", Limit: 4, ResetAfter: sec, Scope: ScopeUser, RetryAfter: sec}, time.Now())
		if s := f.l.Stats(); s.Invalid != 51 || !s.Slowed {
			t.Fatalf("Stats = %+v, want 51 invalid, slowed", s)
		}
		if !strings.Contains(f.log.String(), "slowing down") {
			t.Errorf("no log line for the slow down:\n%s", f.log)
		}
		if v := f.metric(t, "shardvisor_rest_slowdown"); v != 1 {
			t.Errorf("shardvisor_rest_slowdown = %v, want 1", v)
		}
		if v := f.metric(t, "shardvisor_rest_invalid_requests"); v != 51 {
			t.Errorf("shardvisor_rest_invalid_requests = %v, want 51", v)
		}
		if v := f.metric(t, "shardvisor_rest_invalid_requests_limit"); v != 100 {
			t.Errorf("shardvisor_rest_invalid_requests_limit = %v, want 100", v)
		}

		time.Sleep(2 * sec)
		var waits []time.Duration
		for range 4 {
			waits = append(waits, f.l.Ticket(key, time.Now()))
		}
		if waits[0] != 0 || waits[1] != 0 || waits[2] < sec || waits[3] < sec {
			t.Errorf("slowed bucket of 4: waits %v, want 2 now and 2 in the next window", waits)
		}
		if w := f.l.Ticket("POST channels/8/messages", time.Now()); w != 0 {
			t.Errorf("a bucket without invalid answers: wait %v, want 0", w)
		}
		if v := f.metric(t, "shardvisor_rest_slowed_tickets_total"); v != 4 {
			t.Errorf("shardvisor_rest_slowed_tickets_total = %v, want 4", v)
		}

		time.Sleep(DefaultInvalidWindow)
		if s := f.l.Stats(); s.Invalid != 0 || s.Slowed {
			t.Errorf("a window later: Stats = %+v, want none invalid, not slowed", s)
		}
		if !strings.Contains(f.log.String(), "back under") {
			t.Errorf("no log line for the end of the slow down:\n%s", f.log)
		}
	})
}

// TestTicketExpiry: tickets never reported are forgotten after TicketTTL;
// cancelled ones at once.
func TestTicketExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		f.learn("POST channels/1/messages", "msg", 5, 4, 5*sec)
		for range 7 {
			f.l.Ticket("POST channels/1/messages", time.Now())
		}
		f.l.Ticket("GET users/@me", time.Now())
		f.l.Cancel("GET users/@me", time.Now())
		if s := f.l.Stats(); s.InFlight != 7 || s.Waiting != 3 {
			t.Fatalf("Stats = %+v, want 7 in flight, 3 waiting", s)
		}
		time.Sleep(DefaultTicketTTL + 10*sec)
		if s := f.l.Stats(); s.InFlight != 0 || s.Waiting != 0 {
			t.Errorf("after the TTL: Stats = %+v, want none in flight", s)
		}
		if v := f.metric(t, "shardvisor_rest_tickets_expired_total"); v != 7 {
			t.Errorf("shardvisor_rest_tickets_expired_total = %v, want 7", v)
		}
		if v := f.metric(t, "shardvisor_rest_requests_total", "route", "GET users/@me", "class", "none"); v != 1 {
			t.Errorf("cancelled requests = %v, want 1", v)
		}
		time.Sleep(DefaultTicketTTL + 5*sec)
		if s := f.l.Stats(); s.Buckets != 0 {
			t.Errorf("idle: Stats = %+v, want no buckets held", s)
		}
		// What was learned stays.
		for range 5 {
			if w := f.l.Ticket("POST channels/1/messages", time.Now()); w != 0 {
				t.Errorf("after the sweep: wait %v, want 0", w)
			}
		}
	})
}

// TestReportOrder: answers of one window that arrive in order tell what
// is left exactly; out of order, they never raise it.
func TestReportOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		remaining []int // of the answers to 3 tickets sent at once, as they arrive
		more      int   // tickets at once after them
	}{
		{"in order", []int{4, 3, 2}, 2},
		{"last first", []int{2, 4, 3}, 0},
		{"first last", []int{3, 2, 4}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, Config{})
				f.learn("POST channels/1/messages", "msg", 5, 4, 5*sec)
				key := "POST channels/2/messages"
				for range 3 {
					f.l.Ticket(key, time.Now())
				}
				for _, rem := range tc.remaining {
					f.l.Report(key, Response{Status: 200, Bucket: "msg", Limit: 5, Remaining: rem, ResetAfter: 5 * sec}, time.Now())
				}
				for i := range tc.more {
					if w := f.l.Ticket(key, time.Now()); w != 0 {
						t.Errorf("ticket %d: wait %v, want 0", i+4, w)
					}
				}
				if w := f.l.Ticket(key, time.Now()); w < 5*sec {
					t.Errorf("ticket %d: wait %v, want the next window", tc.more+4, w)
				}
			})
		})
	}
}

// TestRouteLabels: the route label of the request counter stays bounded
// whatever the keys.
func TestRouteLabels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Config{})
		for i := range maxRouteLabels + 50 {
			key := "GET weird/x" + strconv.Itoa(i)
			f.l.Report(key, Response{Status: 200}, time.Now())
		}
		mfs, err := f.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		routes := map[string]bool{}
		for _, mf := range mfs {
			if mf.GetName() == "shardvisor_rest_requests_total" {
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						if lp.GetName() == "route" {
							routes[lp.GetValue()] = true
						}
					}
				}
			}
		}
		if len(routes) != maxRouteLabels+1 || !routes["other"] {
			t.Errorf("%d route labels, want %d and other", len(routes), maxRouteLabels)
		}
		if v := f.metric(t, "shardvisor_rest_requests_total", "route", "other", "class", "2xx"); v != 50 {
			t.Errorf("other = %v, want 50", v)
		}
	})
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{Global: -1}, nil); err == nil {
		t.Error("negative Global accepted")
	}
	l, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := l.cfg
	if c.Global != 50 || c.InvalidLimit != 10000 || c.InvalidWindow != 10*time.Minute || c.SlowAt != 0.5 ||
		c.Probe != time.Second || c.Margin != 100*time.Millisecond || c.TicketTTL != time.Minute {
		t.Errorf("defaults %+v", c)
	}
	// Without metrics, everything works.
	l.Ticket("GET users/@me", time.Now())
	l.Report("GET users/@me", Response{Status: http.StatusOK}, time.Now())
}
