package discordtest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func control(t *testing.T, srv *Server, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, srv.URL()+ControlPrefix+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: not a JSON object: %s", method, path, b)
	}
	return resp.StatusCode, m
}

func TestControlAPI(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2})
	defer http.DefaultClient.CloseIdleConnections()
	c := dialRaw(t, srv, "")
	c.identify(srv, 0, 1)

	bad := []struct{ method, path, body, want string }{
		{"GET", "/nope", "", "no control route"},
		{"GET", "/disconnect", "", "method not allowed"},
		{"POST", "/disconnect", "", "empty body"},
		{"POST", "/disconnect", `{"shard":0,"code":1005}`, "cannot be sent"},
		{"POST", "/disconnect", `{"code":4000}`, `"shard" is required`},
		{"POST", "/disconnect", `{"shard":0,"cod":4000}`, "unknown field"},
		{"POST", "/disconnect", `{"shard":0} {}`, "more than one"},
		{"POST", "/zombie", `{"shard":-1,"on":true}`, `"shard" must be >= 0`},
		{"POST", "/zombie", `{"shard":0}`, `"on"`},
		{"POST", "/malformed", `{"shard":0,"kind":"weird"}`, "unknown kind"},
		{"POST", "/hello-delay", `{"delay":"soon"}`, "duration"},
		{"POST", "/fail-rest", `{"status":200,"n":1}`, "400-599"},
		{"POST", "/event-rate", `{"per_shard_per_second":-2}`, ">= 0"},
		{"POST", "/invalid-session-during-guilds", `{"shard":0,"after":-1}`, ">= 0"},
		{"POST", "/invalid-session-during-guilds", `{"shard":-1,"after":1}`, ">= 0"},
		{"POST", "/interact", `{"command":"ping","timeout":"forever"}`, "timeout"},
		{"POST", "/interact", `{"command":"ping","guild_id":"1"}`, "unknown guild"},
	}
	for _, b := range bad {
		status, m := control(t, srv, b.method, b.path, b.body)
		msg, _ := m["error"].(string)
		if status < 400 || !strings.Contains(msg, b.want) {
			t.Errorf("%s %s %s: %d %v, want an error with %q", b.method, b.path, b.body, status, m, b.want)
		}
	}

	ok := []struct{ path, body string }{
		{"/zombie", `{"shard":0,"on":false}`},
		{"/hello-delay", `{"delay":"0s"}`},
		{"/event-rate", `{"per_shard_per_second":0}`},
		{"/reconnect-instead-of-ready", `{"shard":3}`},
		{"/invalid-session-during-guilds", `{"shard":3,"after":2}`},
	}
	for _, o := range ok {
		if status, m := control(t, srv, "POST", o.path, o.body); status != 200 {
			t.Errorf("POST %s: %d %v", o.path, status, m)
		}
	}
	if status, m := control(t, srv, "POST", "/reconnect", `{"shard":0}`); status != 200 || m["connections"] != 1.0 {
		t.Errorf("reconnect: %d %v", status, m)
	}
	c.readUntil(7, "")
	if status, m := control(t, srv, "POST", "/malformed", `{"shard":-1,"kind":"unknown_op"}`); status != 200 || m["connections"] != 1.0 {
		t.Errorf("malformed: %d %v", status, m)
	}
	c.readUntil(42, "")

	// interact: answered by the raw client through REST.
	type result struct {
		status int
		m      map[string]any
	}
	done := make(chan result, 1)
	go func() {
		s, m := control(t, srv, "POST", "/interact", `{"guild_id":"`+srv.GuildIDs()[0]+`","command":"ping","options":[{"name":"n","value":2}],"timeout":"20s"}`)
		done <- result{s, m}
	}()
	p := c.readUntil(0, "INTERACTION_CREATE")
	var in struct {
		ID, Token string
		Data      struct {
			Options []struct {
				Type int
			}
		}
	}
	json.Unmarshal(p.D, &in)
	if len(in.Data.Options) != 1 || in.Data.Options[0].Type != 4 {
		t.Errorf("options %+v", in.Data.Options)
	}
	restDo(t, srv, "POST", "/api/v9/interactions/"+in.ID+"/"+in.Token+"/callback", "", map[string]any{"type": 4, "data": map[string]string{"content": "hey"}})
	res := <-done
	if res.status != 200 || res.m["content"] != "hey" || res.m["via"] != "callback" {
		t.Errorf("interact: %d %v", res.status, res.m)
	}
	// interact with nobody answering: 504; a shard with no session: 409.
	if status, m := control(t, srv, "POST", "/interact", `{"guild_id":"`+srv.GuildIDs()[1]+`","command":"ping","timeout":"50ms"}`); status != 504 {
		t.Errorf("unanswered interact: %d %v", status, m)
	}
	if status, m := control(t, srv, "POST", "/disconnect", `{"shard":0,"code":4000}`); status != 200 || m["connections"] != 1.0 {
		t.Errorf("disconnect: %d %v", status, m)
	}
	c.expectClose(4000)
	if status, m := control(t, srv, "POST", "/invalid-session", `{"shard":0,"resumable":true}`); status != 200 || m["connections"] != 0.0 {
		t.Errorf("invalid-session: %d %v", status, m)
	}

	if status, m := control(t, srv, "POST", "/fail-rest", `{"status":503,"n":1}`); status != 200 {
		t.Errorf("fail-rest: %d %v", status, m)
	}
	if resp, _ := restDo(t, srv, "GET", "/api/v9/gateway", bot(srv), nil); resp.StatusCode != 503 {
		t.Errorf("after fail-rest: %d", resp.StatusCode)
	}
	status, m := control(t, srv, "GET", "/guilds", "")
	if ids, _ := m["guild_ids"].([]any); status != 200 || len(ids) != 2 {
		t.Errorf("guilds: %d %v", status, m)
	}

	req, _ := http.NewRequestWithContext(testContext(t), "GET", srv.URL()+ControlPrefix+"/record", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Record
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("record: %v", err)
	}
	if len(r.Identifies) != 1 || len(r.Interactions) != 2 || r.Interactions[0].Replies[0].Content != "hey" ||
		r.RESTCalls("GET gateway", 503) != 1 || r.Sessions[0].CloseCode != 4000 {
		t.Errorf("record over the control API: %+v", r)
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{Guilds: -1}, {Shards: -1}, {EventRate: -1}, {Token: "a b"}, {ApplicationID: "app"},
		{PrivilegedIntents: 1}, {Guilds: maxGuilds + 1}, {HeartbeatInterval: -time.Second}, {Addr: "256.0.0.1:0"},
	} {
		if srv, err := NewServer(o); err == nil {
			srv.Close()
			t.Errorf("NewServer(%+v) succeeded", o)
		} else if !strings.HasPrefix(err.Error(), "new server: ") {
			t.Errorf("error %q does not name the operation", err)
		}
	}
	srv := newTestServer(t, Options{})
	o := srv.Options()
	if o.Token != DefaultToken || o.Guilds != 10 || o.Shards != 1 || o.IdentifyInterval != 5*time.Second ||
		o.HeartbeatInterval != DefaultHeartbeatInterval || o.MaxGuildsPerShard != 2500 || o.RESTRateLimit != 50 {
		t.Errorf("defaults %+v", o)
	}
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") {
		t.Errorf("URL %s", srv.URL())
	}
}

func TestRecordIsACopyAndWaitForEnds(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	c := dialRaw(t, srv, "")
	c.identify(srv, 0, 1)
	r := srv.Record()
	r.Identifies[0].Shard = 99
	r.Connections[0].Sends = 99
	r.Sessions = nil
	if r2 := srv.Record(); r2.Identifies[0].Shard != 0 || r2.Connections[0].Sends == 99 || len(r2.Sessions) != 1 {
		t.Errorf("mutating a snapshot changed the record: %+v", r2)
	}
	ctx2, cancel2 := context.WithCancel(testContext(t))
	cancel2()
	if _, err := srv.WaitFor(ctx2, func(Record) bool { return false }); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("WaitFor with a cancelled context: %v", err)
	}
	srv.Close()
	if _, err := srv.WaitFor(testContext(t), func(Record) bool { return false }); err == nil {
		t.Error("WaitFor on a closed server returned no error")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
