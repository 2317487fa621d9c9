package discordtest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// Every close code the fake enforces, provoked by a raw client.
func TestCloseCodesRaw(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 4, Shards: 2, SendRateLimit: 20, HeartbeatInterval: 50 * time.Millisecond, IdentifyInterval: 1})
	type step func(c *rawClient)
	identified := func(c *rawClient) { c.identify(srv, 0, 1) }
	cases := []struct {
		name  string
		query string
		code  int
		do    []step
	}{
		{"unknown opcode", "", 4001, []step{func(c *rawClient) { c.send(map[string]any{"op": 99, "d": nil}) }}},
		{"broken json", "", 4002, []step{func(c *rawClient) { c.sendRaw(websocket.TextMessage, []byte(`{"op":1,`)) }}},
		{"no op", "", 4002, []step{func(c *rawClient) { c.send(map[string]any{"d": 1}) }}},
		{"binary", "", 4002, []step{func(c *rawClient) { c.sendRaw(websocket.BinaryMessage, []byte{1, 2, 3}) }}},
		{"oversized", "", 4002, []step{func(c *rawClient) {
			c.send(map[string]any{"op": 1, "d": nil, "pad": strings.Repeat("x", 4100)})
		}}},
		{"bad identify", "", 4002, []step{func(c *rawClient) { c.send(map[string]any{"op": 2, "d": "token"}) }}},
		{"presence first", "", 4003, []step{func(c *rawClient) { c.send(map[string]any{"op": 3, "d": map[string]any{}}) }}},
		{"bad token", "", 4004, []step{func(c *rawClient) {
			c.send(identifyPayloadFor("nope", 0, 1, discordgo.IntentsGuilds, false))
		}}},
		{"identify twice", "", 4005, []step{identified, func(c *rawClient) {
			c.send(identifyPayloadFor(srv.Token(), 0, 1, discordgo.IntentsGuilds, false))
		}}},
		{"resume when identified", "", 4005, []step{identified, func(c *rawClient) {
			c.send(map[string]any{"op": 6, "d": map[string]any{"token": srv.Token(), "session_id": "x", "seq": 1}})
		}}},
		{"send rate", "", 4008, []step{func(c *rawClient) {
			for range 21 {
				c.send(map[string]any{"op": 1, "d": nil})
			}
		}}},
		{"no heartbeat", "", 4009, []step{identified}},
		{"shard id >= count", "", 4010, []step{func(c *rawClient) {
			c.send(identifyPayloadFor(srv.Token(), 2, 2, discordgo.IntentsGuilds, false))
		}}},
		{"api version", "?v=6&encoding=json", 4012, nil},
		{"no intents", "", 4013, []step{func(c *rawClient) {
			c.send(map[string]any{"op": 2, "d": map[string]any{"token": srv.Token(), "properties": map[string]string{}}})
		}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c *rawClient
			if tc.code == 4012 {
				c = dialRawNoHello(t, srv, tc.query)
			} else {
				c = dialRaw(t, srv, tc.query)
			}
			c.t = t
			for _, do := range tc.do {
				do(c)
			}
			c.expectClose(tc.code)
		})
	}
	r := srv.Record()
	codes := map[int]int{}
	for _, cr := range r.Connections {
		if cr.ClosedBy == ClosedByServer {
			codes[cr.CloseCode]++
		}
	}
	for _, tc := range cases {
		if codes[tc.code] == 0 {
			t.Errorf("no connection recorded as closed by the server with %d (%s)", tc.code, tc.name)
		}
	}
	if r.Identified(-1, OutcomeClosed) < 4 {
		t.Errorf("identifies closed: %d", r.Identified(-1, OutcomeClosed))
	}
}

// The fatal codes as discordgo's first Open sees them: a *websocket.CloseError.
func TestCloseCodesDiscordgo(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		opts  Options
		setup func(b *discordgo.Session)
		code  int
	}{
		{"bad token", Options{}, func(b *discordgo.Session) { b.Identify.Token = "Bot nope" }, 4004},
		{"count not a multiple of max_concurrency", Options{Guilds: 6, MaxConcurrency: 2}, func(b *discordgo.Session) {
			b.ShardID, b.ShardCount = 1, 3
		}, 4010},
		{"sharding required", Options{Guilds: 5, MaxGuildsPerShard: 2}, nil, 4011},
		{"invalid intents", Options{}, func(b *discordgo.Session) { b.Identify.Intents = 1 << 30 }, 4013},
		{"privileged intents", Options{}, func(b *discordgo.Session) {
			b.Identify.Intents = discordgo.IntentsGuilds | discordgo.IntentGuildMembers
		}, 4014},
		{"privileged intents allowed", Options{PrivilegedIntents: discordgo.IntentGuildMembers}, func(b *discordgo.Session) {
			b.Identify.Intents = discordgo.IntentsGuilds | discordgo.IntentGuildMembers
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, tc.opts)
			b := newBot(t, srv, 0, 1)
			if tc.setup != nil {
				tc.setup(b)
			}
			err := b.Open()
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				waitFor(t, srv, "live", func(r Record) bool { return r.MaxLive == 1 })
				closeBots(b)
				return
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("Open = %v, want close %d", err, tc.code)
			}
			r := waitFor(t, srv, "the closed identify", func(r Record) bool { return len(r.Identifies) == 1 })
			if id := r.Identifies[0]; id.Outcome != OutcomeClosed || id.CloseCode != tc.code {
				t.Errorf("identify recorded %+v", id)
			}
			if len(r.Sessions) != 0 || r.Starts.Used != 0 {
				t.Errorf("a refused identify started a session: %+v", r.Starts)
			}
		})
	}
}
