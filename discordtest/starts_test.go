package discordtest

import (
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// Accepted IDENTIFYs spend session starts, RESUMEs do not; the IDENTIFY
// that finds the budget spent gets the token reset: every connection
// closes with 4004 and REST answers 401.
func TestSessionStartLimit(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1, SessionStartLimit: 2, IdentifyInterval: 1})
	a := dialRaw(t, srv, "")
	sid, _ := a.identify(srv, 0, 1)
	a.readUntil(0, "GUILD_CREATE")
	a.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, ""))
	a.expectClose(4000)
	waitFor(t, srv, "detached", func(r Record) bool { return !r.Sessions[0].Alive() })
	a2 := dialRaw(t, srv, "")
	a2.send(map[string]any{"op": 6, "d": map[string]any{"token": srv.Token(), "session_id": sid, "seq": 2}})
	a2.readUntil(0, "RESUMED")
	b := dialRaw(t, srv, "")
	b.identify(srv, 0, 1)
	gb, err := newBot(t, srv, 0, 1).GatewayBot()
	if err != nil || gb.SessionStartLimit.Remaining != 0 || gb.SessionStartLimit.ResetAfter <= 0 {
		t.Fatalf("GatewayBot %+v, %v", gb, err)
	}
	c := dialRaw(t, srv, "")
	c.send(identifyPayloadFor(srv.Token(), 0, 1, discordgo.IntentsGuilds, false))
	c.expectClose(4004)
	a2.expectClose(4004)
	b.expectClose(4004)
	r := srv.Record()
	if !r.TokenRevoked || r.Starts.Used != 2 || r.Starts.Remaining != 0 || r.Identified(-1, OutcomeReady) != 2 {
		t.Errorf("record: revoked %v, starts %+v", r.TokenRevoked, r.Starts)
	}
	if resp, _ := restDo(t, srv, "GET", "/api/v10/gateway/bot", bot(srv), nil); resp.StatusCode != 401 {
		t.Errorf("REST after the token reset: %d", resp.StatusCode)
	}
}

// GET gateway/bot describes the window as Discord does: the whole window
// in reset_after until a start opens one, then the time left in it; and
// the first answer after the window ran out reports the budget refilled
// together with the new reset_after, never the old remaining with it.
func TestSessionStartWindow(t *testing.T) {
	t.Parallel()
	const window = 300 * time.Millisecond
	srv := newTestServer(t, Options{Guilds: 1, SessionStartLimit: 3, SessionStartReset: window, IdentifyInterval: 1})
	api := newBot(t, srv, 0, 1)
	limit := func() discordgo.SessionInformation {
		t.Helper()
		gb, err := api.GatewayBot()
		if err != nil {
			t.Fatalf("GatewayBot: %v", err)
		}
		return gb.SessionStartLimit
	}
	if l := limit(); l.Remaining != 3 || l.Total != 3 || l.ResetAfter != int(window.Milliseconds()) {
		t.Fatalf("before any start: %+v, want 3 of 3 and reset_after the whole window", l)
	}
	a := dialRaw(t, srv, "")
	a.identify(srv, 0, 1)
	first := limit()
	if first.Remaining != 2 || first.ResetAfter > int(window.Milliseconds()) {
		t.Fatalf("after one start: %+v, want 2 left and at most the window", first)
	}
	deadline := time.Now().Add(waitTimeout)
	for prev := first.ResetAfter; ; {
		l := limit()
		if l.ResetAfter > prev { // a new window: the old one ran out
			if l.Remaining != 3 {
				t.Fatalf("first answer after the window ran out: %+v, want the budget refilled", l)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the window of %v never ran out: last answer %+v", window, l)
		}
		prev = l.ResetAfter
	}
}
