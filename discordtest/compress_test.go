package discordtest

import (
	"net/http"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// With Options.Compress, a session whose IDENTIFY asks for compression gets
// every frame from READY on as one complete zlib stream per binary frame.
func TestCompression(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		server, identify bool
		binary           bool
	}{
		{"on", true, true, true},
		{"not asked", true, false, false},
		{"not offered", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, Options{Guilds: 2, Compress: tc.server})
			c := dialRaw(t, srv, "")
			c.send(identifyPayloadFor(srv.Token(), 0, 1, discordgo.IntentsGuilds, tc.identify))
			for _, want := range []string{"READY", "GUILD_CREATE", "GUILD_CREATE"} {
				p := c.read()
				if p.T != want || p.Binary != tc.binary {
					t.Fatalf("got %s binary=%v, want %s binary=%v", p.T, p.Binary, want, tc.binary)
				}
			}
			c.send(map[string]any{"op": 1, "d": 3})
			if p := c.read(); p.Op != 11 || p.Binary != tc.binary {
				t.Errorf("ACK op %d binary=%v", p.Op, p.Binary)
			}
		})
	}
	// discordgo asks for compression by default and decodes each frame.
	srv := newTestServer(t, Options{Guilds: 2, Compress: true})
	b := newBot(t, srv, 0, 1)
	evs := newEvents()
	b.AddHandler(evs.add)
	b.AddHandler(pong)
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	evs.waitCount(t, "GUILD_CREATE", 2)
	if rp, err := srv.Interact(testContext(t), Interaction{GuildID: srv.GuildIDs()[0], Command: "ping"}); err != nil || rp.Content != "Pong!" {
		t.Errorf("compressed interaction: %+v %v", rp, err)
	}
	closeBots(b)
}

// With compress=zlib-stream in the URL, every message of the connection,
// HELLO included, is a binary frame of one zlib stream, ending in a sync
// flush; payload compression is then off even when IDENTIFY asks for it.
// Other compress values are refused.
func TestTransportCompression(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 3, Compress: true})
	c := dialRawNoHello(t, srv, "?v=10&encoding=json&compress=zlib-stream")
	if p := c.read(); p.Op != 10 || !p.Binary {
		t.Fatalf("first message: op %d binary=%v, want HELLO in the stream", p.Op, p.Binary)
	}
	c.send(identifyPayloadFor(srv.Token(), 0, 1, discordgo.IntentsGuilds, true))
	for _, want := range []string{"READY", "GUILD_CREATE", "GUILD_CREATE", "GUILD_CREATE"} {
		if p := c.read(); p.T != want || !p.Binary {
			t.Fatalf("got %s binary=%v, want %s in the stream", p.T, p.Binary, want)
		}
	}
	c.send(map[string]any{"op": 1, "d": 4})
	if p := c.read(); p.Op != 11 {
		t.Errorf("after heartbeat: op %d, want 11", p.Op)
	}
	// One zlib reader reads every message (a complete stream per message
	// would end it after HELLO) and each ends in 00 00 ff ff (c.read fails
	// otherwise).

	for _, q := range []string{"zstd-stream", "gzip"} {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		ws, resp, err := d.Dial(srv.GatewayURL()+"?v=10&encoding=json&compress="+q, nil)
		if err == nil {
			ws.Close()
			t.Errorf("compress=%s: upgraded, want refused", q)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("compress=%s: %v, want 400", q, err)
		}
	}
}
