package discordtest

import (
	"testing"

	"github.com/bwmarrin/discordgo"
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
