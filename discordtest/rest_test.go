package discordtest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
)

func TestRESTGatewayBot(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Shards: 4, MaxConcurrency: 2, SessionStartLimit: 50})
	b := newBot(t, srv, 0, 1)
	gb, err := b.GatewayBot()
	if err != nil {
		t.Fatalf("GatewayBot: %v", err)
	}
	if gb.URL != srv.GatewayURL()+"/" || gb.Shards != 4 || gb.SessionStartLimit.Total != 50 ||
		gb.SessionStartLimit.Remaining != 50 || gb.SessionStartLimit.MaxConcurrency != 2 ||
		gb.SessionStartLimit.ResetAfter != int(DefaultSessionStartReset.Milliseconds()) {
		t.Errorf("GatewayBot = %+v, limit %+v", gb, gb.SessionStartLimit)
	}
	for _, v := range []string{"v9", "v10"} {
		resp, body := restDo(t, srv, "GET", "/api/"+v+"/gateway", bot(srv), nil)
		var g struct{ URL string }
		if resp.StatusCode != 200 || json.Unmarshal(body, &g) != nil || g.URL != srv.GatewayURL() {
			t.Errorf("GET /api/%s/gateway: %d %s", v, resp.StatusCode, body)
		}
	}
	me, err := b.User("@me")
	if err != nil || me.ID != srv.ApplicationID() || !me.Bot {
		t.Errorf("User(@me) = %+v, %v", me, err)
	}
	r := srv.Record()
	if r.RESTCalls("GET gateway/bot", 200) != 1 || r.RESTCalls("GET gateway", 200) != 2 {
		t.Errorf("REST counts: %+v", r.REST)
	}
}

func TestRESTErrors(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{})
	cases := []struct {
		method, path, auth string
		status             int
		body               string
		send               any
	}{
		{"GET", "/api/v9/gateway/bot", "Bot wrong", 401, `{"code":0,"message":"401: Unauthorized"}`, nil},
		{"GET", "/api/v9/gateway/bot", "", 401, `{"code":0,"message":"401: Unauthorized"}`, nil},
		{"GET", "/api/v9/gateway/bot", srv.Token(), 401, `{"code":0,"message":"401: Unauthorized"}`, nil},
		{"GET", "/api/v9/no/such/route", bot(srv), 404, `{"code":0,"message":"404: Not Found"}`, nil},
		{"GET", "/api/v8/gateway", bot(srv), 404, `{"code":0,"message":"404: Not Found"}`, nil},
		{"GET", "/api/v9/gateway", "Bot wrong", 401, `{"code":0,"message":"401: Unauthorized"}`, nil},
		{"GET", "/api/v9/gateway", "", 200, `{"url":"` + srv.GatewayURL() + `"}`, nil},
		{"DELETE", "/api/v9/gateway", bot(srv), 405, `{"code":0,"message":"405: Method Not Allowed"}`, nil},
		{"POST", "/api/v9/interactions/1/x/callback", "", 404, `{"code":10062,"message":"Unknown interaction"}`, map[string]int{"type": 4}},
		{"POST", "/api/v9/interactions/1/x/callback", "", 400, `{"code":50109,"message":"The request body contains invalid JSON."}`, nil},
	}
	for _, c := range cases {
		resp, body := restDo(t, srv, c.method, c.path, c.auth, c.send)
		if resp.StatusCode != c.status || string(body) != c.body || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s (auth %q): %d %s, want %d %s", c.method, c.path, c.auth, resp.StatusCode, body, c.status, c.body)
		}
	}
	// discordgo sees a 401 as a RESTError with Discord's body.
	b, _ := discordgo.New("Bot wrong")
	b.Client = srv.Client()
	_, err := b.GatewayBot()
	var re *discordgo.RESTError
	if !errors.As(err, &re) || re.Response.StatusCode != 401 || re.Message == nil || re.Message.Message != "401: Unauthorized" {
		t.Errorf("GatewayBot with a wrong token: %v", err)
	}
	if n := srv.Record().RESTCalls("GET gateway/bot", 401); n != 4 {
		t.Errorf("401s on gateway/bot recorded: %d, want 4", n)
	}
}

// Past RESTRateLimit requests in a second the fake answers 429 with a float
// retry_after and rate limit headers; discordgo waits and retries.
func TestRESTRateLimit(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{RESTRateLimit: 3})
	var limited *http.Response
	var body []byte
	for range 10 {
		resp, b := restDo(t, srv, "GET", "/api/v9/gateway", bot(srv), nil)
		if resp.StatusCode == 429 {
			limited, body = resp, b
			break
		}
	}
	if limited == nil {
		t.Fatal("no 429 after 10 requests with a limit of 3 per second")
	}
	var rl struct {
		Message    string  `json:"message"`
		RetryAfter float64 `json:"retry_after"`
		Global     bool    `json:"global"`
	}
	if err := json.Unmarshal(body, &rl); err != nil || rl.RetryAfter <= 0 || rl.RetryAfter > 1 || !rl.Global {
		t.Errorf("429 body %s", body)
	}
	// A global 429 has the headers of Discord's example and no bucket's.
	h := limited.Header
	if h.Get("X-RateLimit-Global") != "true" || h.Get("X-RateLimit-Scope") != "global" || h.Get("Retry-After") != "1" ||
		h.Get("X-RateLimit-Bucket") != "" || h.Get("X-RateLimit-Remaining") != "" {
		t.Errorf("429 headers %v", h)
	}
	if rls := srv.Record().RateLimited; len(rls) != 1 || rls[0].Scope != ScopeGlobal || rls[0].Bucket != "" ||
		rls[0].Route != "GET gateway" || rls[0].RetryAfter <= 0 || rls[0].RetryAfter > time.Second {
		t.Errorf("rate limits recorded: %+v", rls)
	}
	// discordgo, many requests at once: it honours the headers and retries 429s.
	b := newBot(t, srv, 0, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Gateway(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Gateway under the rate limit: %v", err)
	}
	if n := srv.Record().RESTCalls("GET gateway", 200); n < 8+3 {
		t.Errorf("successful GET gateway: %d", n)
	}
}

// FailREST: a 429 is retried by discordgo, a 502 too, a 500 is returned.
func TestFailREST(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{})
	b := newBot(t, srv, 0, 1)
	limited := make(chan *discordgo.RateLimit, 1)
	b.AddHandler(func(_ *discordgo.Session, rl *discordgo.RateLimit) { limited <- rl })

	srv.FailREST(429, 1)
	if _, err := b.Gateway(); err != nil {
		t.Fatalf("Gateway after one injected 429: %v", err)
	}
	select {
	case rl := <-limited:
		if rl.RetryAfter <= 0 {
			t.Errorf("RateLimit event retry after %v", rl.RetryAfter)
		}
	default:
		t.Error("discordgo saw no RateLimit event")
	}
	srv.FailREST(502, 2)
	if _, err := b.Gateway(); err != nil {
		t.Fatalf("Gateway after two 502s (discordgo retries 3 times): %v", err)
	}
	srv.FailREST(500, 1)
	_, err := b.Gateway()
	var re *discordgo.RESTError
	if !errors.As(err, &re) || re.Response.StatusCode != 500 || re.Message == nil || re.Message.Message != "500: Internal Server Error" {
		t.Fatalf("Gateway with an injected 500: %v", err)
	}
	r := srv.Record()
	if r.RESTCalls("GET gateway", 429) != 1 || r.RESTCalls("GET gateway", 502) != 2 ||
		r.RESTCalls("GET gateway", 500) != 1 || r.RESTCalls("GET gateway", 200) != 2 {
		t.Errorf("REST counts %+v", r.REST)
	}
}

// Bulk overwrite round trip through discordgo, global and per guild.
func TestCommandsBulkOverwrite(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{})
	b := newBot(t, srv, 0, 1)
	app := srv.ApplicationID()
	cmds := []*discordgo.ApplicationCommand{
		{Name: "ping", Description: "Ping the bot"},
		{Name: "echo", Description: "Echo", Options: []*discordgo.ApplicationCommandOption{
			{Type: discordgo.ApplicationCommandOptionString, Name: "text", Description: "what", Required: true},
		}},
	}
	got, err := b.ApplicationCommandBulkOverwrite(app, "", cmds)
	if err != nil {
		t.Fatalf("bulk overwrite: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("bulk overwrite returned %d commands", len(got))
	}
	ids := map[string]string{}
	for _, c := range got {
		if c.ID == "" || c.ApplicationID != app || c.Version == "" || c.Type != discordgo.ChatApplicationCommand {
			t.Errorf("command %+v incomplete", c)
		}
		ids[c.Name] = c.ID
	}
	if got[1].Options[0].Name != "text" || !got[1].Options[0].Required {
		t.Errorf("options not kept: %+v", got[1].Options[0])
	}
	list, err := b.ApplicationCommands(app, "")
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v, %d", err, len(list))
	}
	// Overwrite again: ping keeps its id, echo is gone.
	again, err := b.ApplicationCommandBulkOverwrite(app, "", cmds[:1])
	if err != nil || len(again) != 1 || again[0].ID != ids["ping"] || again[0].Version == got[0].Version {
		t.Fatalf("second overwrite: %v %+v", err, again)
	}
	guild := srv.GuildIDs()[3]
	g, err := b.ApplicationCommandBulkOverwrite(app, guild, cmds[1:])
	if err != nil || len(g) != 1 || g[0].GuildID != guild {
		t.Fatalf("guild overwrite: %v %+v", err, g)
	}
	if list, _ := b.ApplicationCommands(app, guild); len(list) != 1 {
		t.Errorf("guild list has %d", len(list))
	}
	if list, _ := b.ApplicationCommands(app, ""); len(list) != 1 {
		t.Errorf("global list has %d after the guild overwrite", len(list))
	}
	// Invalid: no description, an unknown guild.
	_, err = b.ApplicationCommandBulkOverwrite(app, "", []*discordgo.ApplicationCommand{{Name: "nodesc"}})
	var re *discordgo.RESTError
	if !errors.As(err, &re) || re.Response.StatusCode != 400 || re.Message == nil || re.Message.Code != 50035 {
		t.Errorf("command without description: %v", err)
	}
	_, err = b.ApplicationCommandBulkOverwrite(app, "123", cmds)
	if !errors.As(err, &re) || re.Response.StatusCode != 403 {
		t.Errorf("unknown guild: %v", err)
	}
	if err := b.ApplicationCommandDelete(app, "", ids["ping"]); err != nil {
		t.Errorf("delete: %v", err)
	}
	if list, _ := b.ApplicationCommands(app, ""); len(list) != 0 {
		t.Errorf("global list has %d after delete", len(list))
	}
}

func TestCurrentApplication(t *testing.T) {
	srv, err := NewServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s, _ := discordgo.New("Bot " + srv.Token())
	s.Client = srv.Client()
	app, err := s.Application("@me") // GET oauth2/applications/@me
	if err != nil || app.ID != srv.ApplicationID() {
		t.Fatalf("Application(@me) = %+v, %v", app, err)
	}
	body, err := s.Request("GET", discordgo.EndpointApplication("@me"), nil)
	if err != nil || !strings.Contains(string(body), srv.ApplicationID()) {
		t.Fatalf("GET applications/@me = %s, %v", body, err)
	}
}
