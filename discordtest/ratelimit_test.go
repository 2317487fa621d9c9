package discordtest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const routeMessages = "POST channels/{channel}/messages"

// The bucket policy: which routes share a bucket, what makes up the major
// parameter, and the defaults.
func TestRouteLimitPolicy(t *testing.T) {
	t.Parallel()
	defaults := DefaultRouteLimits()
	for _, rt := range restRoutes() {
		if _, ok := defaults[rt.pattern]; !ok {
			t.Errorf("route %q has no default limit", rt.pattern)
		}
	}
	if len(defaults) != len(restRoutes()) {
		t.Errorf("defaults for %d routes, %d served", len(defaults), len(restRoutes()))
	}
	l := newLimiter(50, defaults, 1, time.Minute, time.Hour)
	cases := []struct {
		route     string
		limit     int
		per       time.Duration
		major     string // the wildcards, joined by ","
		sameAs    string // a route with the same bucket
		notSameAs string // a route with another bucket
	}{
		{routeMessages, 5, 5 * time.Second, "channel", "", "GET gateway"},
		{"GET gateway", 50, time.Second, "", "", "GET gateway/bot"},
		{"GET applications/@me", 50, time.Second, "", "GET oauth2/applications/@me", "GET users/@me"},
		{"PUT applications/{app}/commands", 50, time.Second, "", "", "PUT applications/{app}/guilds/{guild}/commands"},
		{"PUT applications/{app}/guilds/{guild}/commands", 50, time.Second, "guild", "", "POST applications/{app}/guilds/{guild}/commands"},
		{"POST interactions/{id}/{token}/callback", 50, time.Second, "id,token", "", "POST webhooks/{app}/{token}"},
		{"POST webhooks/{app}/{token}", 50, time.Second, "app,token", "", "GET webhooks/{app}/{token}/messages/{msg}"},
		{"PATCH webhooks/{app}/{token}/messages/{msg}", 50, time.Second, "app,token", "DELETE webhooks/{app}/{token}/messages/{msg}", ""},
		{"GET webhooks/{app}/{token}/messages/{msg}", 50, time.Second, "app,token", "PATCH webhooks/{app}/{token}/messages/{msg}", ""},
	}
	for _, c := range cases {
		p := l.routes[c.route]
		if p == nil {
			t.Errorf("%s: no policy", c.route)
			continue
		}
		if p.limit != c.limit || p.per != c.per || strings.Join(p.major, ",") != c.major || len(p.hash) != 32 {
			t.Errorf("%s: %d per %v, major %v, hash %q; want %d per %v, major %q", c.route, p.limit, p.per, p.major, p.hash, c.limit, c.per, c.major)
		}
		if c.sameAs != "" && l.routes[c.sameAs].hash != p.hash {
			t.Errorf("%s and %s do not share a bucket", c.route, c.sameAs)
		}
		if c.notSameAs != "" && l.routes[c.notSameAs].hash == p.hash {
			t.Errorf("%s and %s share a bucket", c.route, c.notSameAs)
		}
	}
	if bucketHash("x") != bucketHash("x") || bucketHash("x") == bucketHash("y") {
		t.Error("bucket hash not stable or not distinct")
	}

	// Overrides: valid ones merge into the defaults, bad ones are refused.
	bad := []map[string]RouteLimit{
		{"GET nowhere": {Limit: 1, Per: time.Second}},
		{routeMessages: {Limit: 0, Per: time.Second}},
		{routeMessages: {Limit: 1, Per: time.Microsecond}},
		{routeMessages: {Limit: 1, Per: time.Second, Bucket: "application"}}, // the default 50/s bucket
		{"GET users/@me": {Limit: 1, Per: time.Second, Bucket: "b"}, "GET gateway": {Limit: 1, Per: time.Second, Bucket: "b", Shared: true}},
	}
	for _, o := range bad {
		if _, err := routeLimits(o); err == nil {
			t.Errorf("routeLimits(%v) accepted", o)
		}
		if srv, err := NewServer(Options{RouteLimits: o}); err == nil {
			srv.Close()
			t.Errorf("NewServer with route limits %v succeeded", o)
		}
	}
	shared := RouteLimit{Limit: 7, Per: time.Minute, Bucket: "commands"}
	m, err := routeLimits(map[string]RouteLimit{"GET applications/{app}/commands": shared, "PUT applications/{app}/commands": shared})
	if err != nil {
		t.Fatal(err)
	}
	l2 := newLimiter(50, m, 1, time.Minute, time.Hour)
	if a, b := l2.routes["GET applications/{app}/commands"], l2.routes["PUT applications/{app}/commands"]; a.hash != b.hash || a.limit != 7 || a.hash == bucketHash("GET applications/{app}/commands") {
		t.Errorf("override sharing bucket: %+v %+v", a, b)
	}
	if m[routeMessages] != defaults[routeMessages] {
		t.Errorf("an override changed another route: %+v", m[routeMessages])
	}
}

// NewServer keeps a copy of RouteLimits, and Options returns one.
func TestRouteLimitsCopied(t *testing.T) {
	t.Parallel()
	mine := map[string]RouteLimit{routeMessages: {Limit: 2, Per: time.Minute}}
	srv := newTestServer(t, Options{RouteLimits: mine})
	mine[routeMessages] = RouteLimit{Limit: 1000, Per: time.Second}
	o := srv.Options()
	if o.RouteLimits[routeMessages].Limit != 2 || len(o.RouteLimits) != len(restRoutes()) {
		t.Errorf("route limits in force: %v", o.RouteLimits)
	}
	o.RouteLimits[routeMessages] = RouteLimit{Limit: 1000, Per: time.Second}
	if b, _ := srv.Bucket(routeMessages, "1"); b.Limit != 2 || srv.Options().RouteLimits[routeMessages].Limit != 2 {
		t.Errorf("changing Options().RouteLimits changed the server: %+v", b)
	}
	if o.InvalidRequestLimit != DefaultInvalidRequestLimit || o.InvalidRequestWindow != DefaultInvalidRequestWindow || o.BanPeriod != DefaultBanPeriod {
		t.Errorf("invalid request defaults %d %v %v", o.InvalidRequestLimit, o.InvalidRequestWindow, o.BanPeriod)
	}
}

// Fixed windows opened by the first request, per bucket and major
// parameter; refusals do not use the window up; the global window per
// identity.
func TestLimiterWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		limits, err := routeLimits(map[string]RouteLimit{
			"GET applications/@me": {Limit: 2, Per: time.Second, Bucket: "application"}, "GET oauth2/applications/@me": {Limit: 2, Per: time.Second, Bucket: "application"},
		})
		if err != nil {
			t.Fatal(err)
		}
		l := newLimiter(3, limits, 10, time.Minute, time.Hour)
		msg := l.routes[routeMessages]
		start := time.Now()
		for i := range 5 {
			v := l.allowRoute(msg, "1", time.Now())
			if !v.ok || v.remaining != 4-i || v.limit != 5 || !v.reset.Equal(start.Add(5*time.Second)) || v.hash != msg.hash {
				t.Fatalf("message %d: %+v", i, v)
			}
			time.Sleep(500 * time.Millisecond)
		}
		v := l.allowRoute(msg, "1", time.Now())
		if v.ok || v.scope != ScopeUser || v.remaining != 0 || !v.reset.Equal(start.Add(5*time.Second)) {
			t.Fatalf("sixth message: %+v", v)
		}
		if v := l.allowRoute(msg, "2", time.Now()); !v.ok || v.remaining != 4 {
			t.Fatalf("another channel: %+v", v)
		}
		if st := l.bucket(msg, "1", time.Now()); st.Remaining != 0 || !st.Reset.Equal(start.Add(5*time.Second)) {
			t.Errorf("bucket state %+v", st)
		}
		time.Sleep(time.Until(start.Add(5 * time.Second)))
		if st := l.bucket(msg, "1", time.Now()); st.Remaining != 5 || !st.Reset.IsZero() {
			t.Errorf("bucket state after the window %+v", st)
		}
		now := time.Now()
		if v := l.allowRoute(msg, "1", now); !v.ok || v.remaining != 4 || !v.reset.Equal(now.Add(5*time.Second)) {
			t.Fatalf("after the reset: %+v", v)
		}

		// Two routes, one bucket.
		a, b := l.routes["GET applications/@me"], l.routes["GET oauth2/applications/@me"]
		if !l.allowRoute(a, "", time.Now()).ok || !l.allowRoute(b, "", time.Now()).ok || l.allowRoute(a, "", time.Now()).ok {
			t.Error("the shared bucket did not count both routes")
		}

		// Global: 3 per second per identity.
		now = time.Now()
		for i := range 3 {
			if v := l.allowGlobal("bot", now); !v.ok || v.remaining != 2-i {
				t.Fatalf("global %d: %+v", i, v)
			}
		}
		if v := l.allowGlobal("bot", now); v.ok || v.scope != ScopeGlobal || v.hash != "" || !v.reset.Equal(now.Add(time.Second)) {
			t.Fatalf("fourth global: %+v", v)
		}
		if v := l.allowGlobal("ip 10.0.0.1", now); !v.ok {
			t.Fatalf("another identity: %+v", v)
		}
		time.Sleep(time.Second)
		if v := l.allowGlobal("bot", time.Now()); !v.ok {
			t.Fatalf("global after a second: %+v", v)
		}
	})
}

// Invalid requests: a sliding window, a ban past the limit, and its end.
func TestLimiterInvalidRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(50, DefaultRouteLimits(), 3, 10*time.Second, time.Minute)
		for range 3 {
			if n, until := l.invalid("a", time.Now()); !until.IsZero() {
				t.Fatalf("banned at %d", n)
			}
			time.Sleep(4 * time.Second)
		}
		// At 12 s the first (at 0 s) has left the window.
		if n := l.invalidCount("a", time.Now()); n != 2 {
			t.Errorf("in the window at 12 s: %d, want 2", n)
		}
		if n, until := l.invalid("a", time.Now()); n != 3 || !until.IsZero() {
			t.Fatalf("third in the window: %d, banned until %v", n, until)
		}
		if n, _ := l.invalid("b", time.Now()); n != 1 {
			t.Errorf("another IP: %d", n)
		}
		now := time.Now()
		n, until := l.invalid("a", now)
		if n != 4 || !until.Equal(now.Add(time.Minute)) {
			t.Fatalf("fourth in the window: %d, banned until %v", n, until)
		}
		if _, banned := l.bannedUntil("a", now); !banned || l.invalidCount("a", now) != 0 {
			t.Error("not banned, or the count did not start again")
		}
		if _, banned := l.bannedUntil("b", now); banned {
			t.Error("another IP banned")
		}
		time.Sleep(time.Minute - time.Millisecond)
		if _, banned := l.bannedUntil("a", time.Now()); !banned {
			t.Error("ban ended early")
		}
		time.Sleep(time.Millisecond)
		if _, banned := l.bannedUntil("a", time.Now()); banned {
			t.Error("ban did not end")
		}
	})
}

// Windows that ran out are swept as the map grows: it stays within about
// twice the open windows.
func TestLimiterSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(50, DefaultRouteLimits(), 10, time.Minute, time.Hour)
		p := l.routes[routeMessages]
		for round := range 2 {
			for i := range 3000 {
				l.allowRoute(p, fmt.Sprint(round, "-", i), time.Now())
			}
			time.Sleep(5 * time.Second)
		}
		l.mu.Lock()
		n := len(l.buckets)
		l.mu.Unlock()
		if n > 4000 {
			t.Errorf("%d buckets kept for 3000 open windows", n)
		}
	})
}

// rateLimitBody is Discord's 429 body.
type rateLimitBody struct {
	Message    string   `json:"message"`
	RetryAfter float64  `json:"retry_after"`
	Global     *bool    `json:"global"`
	Code       *float64 `json:"code"`
}

// Per-route buckets end to end: the headers' values, majors apart, routes
// sharing a bucket, scopes, the record and Server.Bucket.
func TestRESTRouteBuckets(t *testing.T) {
	t.Parallel()
	app := RouteLimit{Limit: 2, Per: time.Minute, Bucket: "app"}
	srv := newTestServer(t, Options{RouteLimits: map[string]RouteLimit{
		routeMessages:          {Limit: 2, Per: time.Minute},
		"GET applications/@me": app, "GET oauth2/applications/@me": app,
		"GET users/@me": {Limit: 1, Per: time.Minute, Shared: true},
	}})
	hash := bucketHash(routeMessages)
	post := func(ch string) (*http.Response, []byte) {
		return restDo(t, srv, "POST", "/api/v10/channels/"+ch+"/messages", bot(srv), map[string]string{"content": "hi"})
	}
	var millis *regexp.Regexp
	checkHeaders := func(what string, h http.Header, limit, remaining int, per time.Duration) {
		t.Helper()
		after, err1 := strconv.ParseFloat(h.Get("X-RateLimit-Reset-After"), 64)
		reset, err2 := strconv.ParseFloat(h.Get("X-RateLimit-Reset"), 64)
		now := float64(time.Now().UnixMilli()) / 1000
		if h.Get("X-RateLimit-Limit") != strconv.Itoa(limit) || h.Get("X-RateLimit-Remaining") != strconv.Itoa(remaining) ||
			err1 != nil || err2 != nil || after <= per.Seconds()-10 || after > per.Seconds() ||
			math.Abs(reset-now-after) > 5 || !millis.MatchString(h.Get("X-RateLimit-Reset-After")) || !millis.MatchString(h.Get("X-RateLimit-Reset")) {
			t.Errorf("%s: headers %v", what, h)
		}
	}
	millis = regexp.MustCompile(`^[0-9]+\.[0-9]{3}$`)
	start := time.Now()
	for i, ch := range []string{"1", "1", "2"} {
		resp, body := post(ch)
		want := []int{1, 0, 1}[i]
		if resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Bucket") != hash {
			t.Fatalf("message %d to %s: %d %s %v", i, ch, resp.StatusCode, body, resp.Header)
		}
		checkHeaders(fmt.Sprintf("message %d to %s", i, ch), resp.Header, 2, want, time.Minute)
	}
	resp, body := post("1")
	var rl rateLimitBody
	h := resp.Header
	if err := json.Unmarshal(body, &rl); err != nil || resp.StatusCode != 429 || rl.Message != "You are being rate limited." ||
		rl.Global == nil || *rl.Global || rl.RetryAfter <= 50 || rl.RetryAfter > 60 || rl.Code != nil {
		t.Fatalf("third message to 1: %d %s", resp.StatusCode, body)
	}
	checkHeaders("429", h, 2, 0, time.Minute)
	if h.Get("X-RateLimit-Scope") != "user" || h.Get("X-RateLimit-Global") != "" || h.Get("X-RateLimit-Bucket") != hash ||
		h.Get("Retry-After") != strconv.Itoa(int(math.Ceil(rl.RetryAfter))) || h.Get("X-RateLimit-Reset-After") != strconv.FormatFloat(rl.RetryAfter, 'f', 3, 64) {
		t.Errorf("429 headers %v, body %s", h, body)
	}
	for _, c := range []struct {
		major     string
		remaining int
		open      bool
	}{{"1", 0, true}, {"2", 1, true}, {"3", 2, false}} {
		st, ok := srv.Bucket(routeMessages, c.major)
		if !ok || st.Bucket != hash || st.Limit != 2 || st.Per != time.Minute || st.Remaining != c.remaining || st.Reset.IsZero() == c.open ||
			(c.open && (st.Reset.Before(start.Add(time.Minute)) || st.Reset.After(time.Now().Add(time.Minute)))) {
			t.Errorf("Bucket(messages, %s) = %+v, %v", c.major, st, ok)
		}
	}
	if _, ok := srv.Bucket("GET nowhere", ""); ok {
		t.Error("Bucket of an unknown route")
	}

	// Two routes, one bucket: the same hash, one count.
	var hashes []string
	for i, path := range []string{"/api/v10/applications/@me", "/api/v10/oauth2/applications/@me", "/api/v10/applications/@me"} {
		resp, _ := restDo(t, srv, "GET", path, bot(srv), nil)
		if want := []int{200, 200, 429}[i]; resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		hashes = append(hashes, resp.Header.Get("X-RateLimit-Bucket"))
	}
	if hashes[0] != bucketHash("app") || hashes[1] != hashes[0] || hashes[2] != hashes[0] {
		t.Errorf("bucket hashes %v", hashes)
	}

	// A shared resource's 429 says so and is not an invalid request.
	restDo(t, srv, "GET", "/api/v10/users/@me", bot(srv), nil)
	resp, _ = restDo(t, srv, "GET", "/api/v10/users/@me", bot(srv), nil)
	if resp.StatusCode != 429 || resp.Header.Get("X-RateLimit-Scope") != "shared" {
		t.Errorf("shared limit: %d %v", resp.StatusCode, resp.Header)
	}

	r := srv.Record()
	type got struct{ route, bucket, major, scope string }
	var gs []got
	for _, x := range r.RateLimited {
		gs = append(gs, got{x.Route, x.Bucket, x.Major, x.Scope})
		if x.RetryAfter <= 0 || x.RetryAfter > time.Minute || x.At.Before(start) {
			t.Errorf("rate limit record %+v", x)
		}
	}
	want := fmt.Sprint([]got{
		{routeMessages, hash, "1", "user"},
		{"GET applications/@me", bucketHash("app"), "", "user"},
		{"GET users/@me", bucketHash("GET users/@me"), "", "shared"},
	})
	if fmt.Sprint(gs) != want {
		t.Errorf("rate limits recorded\n%v, want\n%v", gs, want)
	}
	if r.RateLimits(ScopeShared) != 1 || r.RateLimits("") != 3 || r.RESTCalls(routeMessages, 429) != 1 {
		t.Errorf("counts: %d shared, %d in all, %d on messages", r.RateLimits(ScopeShared), r.RateLimits(""), r.RESTCalls(routeMessages, 429))
	}
	if r.InvalidRequests != 2 || srv.InvalidRequests("127.0.0.1") != 2 {
		t.Errorf("invalid requests: record %d, window %d; want 2 (the shared 429 does not count)", r.InvalidRequests, srv.InvalidRequests("127.0.0.1"))
	}

	// GET /_fake/bucket.
	cr, cb := restDo(t, srv, "GET", ControlPrefix+"/bucket?route="+strings.ReplaceAll(routeMessages, " ", "%20")+"&major=2", "", nil)
	var st BucketState
	if err := json.Unmarshal(cb, &st); err != nil || cr.StatusCode != 200 || st.Remaining != 1 || st.Bucket != hash {
		t.Errorf("GET /bucket: %d %s", cr.StatusCode, cb)
	}
	if cr, _ := restDo(t, srv, "GET", ControlPrefix+"/bucket?route=nope", "", nil); cr.StatusCode != 404 {
		t.Errorf("GET /bucket of an unknown route: %d", cr.StatusCode)
	}
}

// Past InvalidRequestLimit invalid requests the IP is banned from REST:
// 403 with Cloudflare's body, on every route, uncounted; the control API
// still answers.
func TestRESTInvalidRequestBan(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{InvalidRequestLimit: 3})
	for i := range 4 {
		if resp, _ := restDo(t, srv, "GET", "/api/v10/gateway/bot", "Bot wrong", nil); resp.StatusCode != 401 {
			t.Fatalf("request %d with a wrong token: %d", i, resp.StatusCode)
		}
	}
	for _, path := range []string{"/api/v10/gateway/bot", "/api/v10/no/such/route", "/api/v9/gateway"} {
		resp, body := restDo(t, srv, "GET", path, bot(srv), nil)
		if resp.StatusCode != 403 || string(body) != "error code: 1015" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET %s while banned: %d %q %v", path, resp.StatusCode, body, resp.Header)
		}
	}
	resp, body := restDo(t, srv, "GET", ControlPrefix+"/record", "", nil)
	var r Record
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /_fake/record while banned: %d %s", resp.StatusCode, body)
	}
	if len(r.Bans) != 1 || r.Bans[0].IP != "127.0.0.1" || r.Bans[0].Invalid != 4 ||
		r.Bans[0].Until.Sub(r.Bans[0].At) != DefaultBanPeriod || r.InvalidRequests != 4 {
		t.Errorf("bans %+v, invalid %d", r.Bans, r.InvalidRequests)
	}
	if r.RESTCalls("GET gateway/bot", 403) != 1 || r.RESTCalls("unknown", 403) != 1 || srv.InvalidRequests("127.0.0.1") != 0 {
		t.Errorf("REST %+v, invalid now %d", r.REST, srv.InvalidRequests("127.0.0.1"))
	}
}

// discordgo obeys the headers: many goroutines send to two channels faster
// than the bucket allows, discordgo waits for the resets it reads, and the
// fake answers (almost) no 429. The fake enforces the limit: it took at
// least the windows it should.
func TestDiscordgoObeysRouteBuckets(t *testing.T) {
	t.Parallel()
	const limit, per, n = 3, 300 * time.Millisecond, 12
	srv := newTestServer(t, Options{RouteLimits: map[string]RouteLimit{routeMessages: {Limit: limit, Per: per}}})
	b := newBot(t, srv, 0, 1)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, ch := range []string{"111", "222"} {
		for i := range n {
			wg.Go(func() {
				if _, err := b.ChannelMessageSend(ch, fmt.Sprint("message ", i)); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Errorf("ChannelMessageSend: %v", err)
	}
	r := srv.Record()
	if ok := r.RESTCalls(routeMessages, 200); ok != 2*n {
		t.Errorf("%d messages accepted, want %d", ok, 2*n)
	}
	// discordgo truncates a millisecond when it parses Reset-After, so on
	// rare occasions it comes back a hair early; more than that means the
	// headers lie.
	if n429 := r.RateLimits(""); n429 > 2 {
		t.Errorf("%d 429s: discordgo did not manage to obey the headers: %+v", n429, r.RateLimited)
	} else if n429 > 0 {
		t.Logf("%d 429s: %+v", n429, r.RateLimited)
	}
	if min := (n/limit - 1) * per; elapsed < min {
		t.Errorf("%d messages per channel at %d per %v took %v, less than %v: the bucket did not hold", n, limit, per, elapsed, min)
	}
}

// BenchmarkRESTLimiter is the limiter's cost per request: the global
// window and a per-channel bucket, over many channels, from all CPUs.
func BenchmarkRESTLimiter(b *testing.B) {
	l := newLimiter(1<<30, DefaultRouteLimits(), DefaultInvalidRequestLimit, DefaultInvalidRequestWindow, DefaultBanPeriod)
	p := l.routes[routeMessages]
	majors := make([]string, 1000)
	for i := range majors {
		majors[i] = strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			now := time.Now()
			l.allowGlobal("bot", now)
			l.allowRoute(p, majors[i%len(majors)], now)
			i++
		}
	})
}
