package discordtest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// A raw client resumes from a sequence number it had: the fake replays the
// later dispatches with their original sequence numbers, including one sent
// while no connection carried the session, then RESUMED.
func TestResumeReplayRaw(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 4, IdentifyInterval: 1})
	a := dialRaw(t, srv, "")
	sid, _ := a.identify(srv, 0, 1)
	for range 4 {
		a.readUntil(0, "GUILD_CREATE")
	}
	a.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"))
	a.expectClose(4000) // gorilla's close handler echoes it
	waitFor(t, srv, "the session detached", func(r Record) bool {
		ss, ok := r.Session(sid)
		return ok && !ss.Alive() && ss.Resumable && ss.ClosedBy == ClosedByClient && ss.CloseCode == 4000
	})

	type result struct {
		r   Reply
		err error
	}
	done := make(chan result, 1)
	ctx := testContext(t)
	go func() {
		r, err := srv.Interact(ctx, Interaction{GuildID: srv.GuildIDs()[1], Command: "ping"})
		done <- result{r, err}
	}()
	waitFor(t, srv, "the interaction kept for replay", func(r Record) bool { return len(r.Interactions) == 1 })

	b := dialRaw(t, srv, "")
	b.send(map[string]any{"op": 6, "d": map[string]any{"token": "Bot " + srv.Token(), "session_id": sid, "seq": 4}})
	var got []string
	var inter struct{ ID, Token string }
	for {
		p := b.read()
		if p.Op != 0 {
			continue
		}
		got = append(got, fmt.Sprintf("%d %s", *p.S, p.T))
		if p.T == "INTERACTION_CREATE" {
			json.Unmarshal(p.D, &inter)
		}
		if p.T == "RESUMED" {
			break
		}
	}
	want := []string{"5 GUILD_CREATE", "6 INTERACTION_CREATE", "7 RESUMED"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after RESUME from 4: %v, want %v", got, want)
	}
	resp, body := restDo(t, srv, "POST", "/api/v9/interactions/"+inter.ID+"/"+inter.Token+"/callback", "",
		map[string]any{"type": 4, "data": map[string]string{"content": "Pong!"}})
	if resp.StatusCode != 204 {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	res := <-done
	if res.err != nil || res.r.Content != "Pong!" {
		t.Fatalf("Interact = %+v, %v", res.r, res.err)
	}
	r := srv.Record()
	ss, _ := r.Session(sid)
	if len(r.Resumes) != 1 || r.Resumes[0].Outcome != OutcomeResumed || r.Resumes[0].Replayed != 2 || ss.Resumes != 1 || !ss.Alive() {
		t.Errorf("resume record %+v, session %+v", r.Resumes, ss)
	}
	if r.Starts.Used != 1 {
		t.Errorf("a RESUME spent a session start: used %d", r.Starts.Used)
	}

	// RESUMEs that cannot be served: op 9 d:false and the socket stays open.
	for _, tc := range []struct {
		sid string
		seq int
	}{{"no-such-session", 1}, {sid, 99}} {
		c := dialRaw(t, srv, "")
		c.send(map[string]any{"op": 6, "d": map[string]any{"token": srv.Token(), "session_id": tc.sid, "seq": tc.seq}})
		if p := c.readUntil(9, ""); string(p.D) != "false" {
			t.Errorf("resume %s from %d: op 9 d=%s", tc.sid, tc.seq, p.D)
		}
		c.identify(srv, 0, 1) // the fake accepts an IDENTIFY on the same socket
	}
}

// Real discordgo: the connection drops, an interaction arrives meanwhile,
// discordgo resumes and gets it replayed with its original sequence number,
// and answers it. The sequence numbers it saw have no gap and no repeat.
func TestResumeReplayDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 3})
	b := newBot(t, srv, 0, 1)
	b.ShouldReconnectOnError = true
	b.SyncEvents = true
	evs := newEvents()
	b.AddHandler(evs.add)
	b.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
		s.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
			Type: discordgo.InteractionResponseChannelMessageWithSource,
			Data: &discordgo.InteractionResponseData{Content: "Pong!"},
		})
	})
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	r := waitFor(t, srv, "READY and the guilds delivered", func(r Record) bool {
		return len(r.Sessions) == 1 && r.Sessions[0].Dispatches == 4 && settled(r, 0)
	})
	sid := r.Sessions[0].ID
	if n := srv.Disconnect(0, 0); n != 1 {
		t.Fatalf("Disconnect acted on %d connections", n)
	}
	reply, err := srv.Interact(testContext(t), Interaction{GuildID: srv.GuildIDs()[0], Command: "ping"})
	if err != nil || reply.Content != "Pong!" || reply.Type != 4 {
		t.Fatalf("Interact across a resume: %+v, %v", reply, err)
	}
	r = waitFor(t, srv, "the resume", func(r Record) bool { return len(r.Resumes) == 1 && settled(r, 0) })
	if rr := r.Resumes[0]; rr.Outcome != OutcomeResumed || rr.SessionID != sid || rr.Replayed != 1 || rr.Seq != 4 {
		t.Errorf("resume %+v", rr)
	}
	if r.MaxLive != 1 || len(r.Sessions) != 1 || r.Sessions[0].Resumes != 1 {
		t.Errorf("max live %d, sessions %+v", r.MaxLive, r.Sessions)
	}
	evs.waitCount(t, "RESUMED", 1)
	var seqs []int64
	var types []string
	for _, e := range evs.snapshot() {
		seqs = append(seqs, e.Sequence)
		types = append(types, e.Type)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("discordgo saw sequence numbers %v (%v)", seqs, types)
		}
	}
	if len(types) < 6 || types[4] != "INTERACTION_CREATE" || types[5] != "RESUMED" {
		t.Errorf("events %v", types)
	}
	closeBots(b)
}

// A session the server ended (4009) cannot be resumed: discordgo's RESUME
// gets op 9 d:false, it identifies inline on the same socket and gets READY.
func TestResumeEndedSessionDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2, IdentifyInterval: 1})
	b := newBot(t, srv, 0, 1)
	b.ShouldReconnectOnError = true
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, srv, 0, 1)
	srv.Disconnect(0, 4009)
	r := waitFor(t, srv, "a new session", func(r Record) bool {
		return r.Identified(0, OutcomeReady) == 2 && r.Shard(0, 1).Live == 1 && settled(r, 0)
	})
	if len(r.Resumes) != 1 || r.Resumes[0].Outcome != OutcomeInvalidSession {
		t.Fatalf("resumes %+v", r.Resumes)
	}
	if r.Identifies[1].Conn != r.Resumes[0].Conn {
		t.Errorf("the new IDENTIFY came on connection %d, the RESUME on %d", r.Identifies[1].Conn, r.Resumes[0].Conn)
	}
	if r.Sessions[0].Resumable || r.Sessions[0].CloseCode != 4009 || r.Sessions[0].ClosedBy != ClosedByServer {
		t.Errorf("first session %+v", r.Sessions[0])
	}
	closeBots(b)
}

// The event stream goes on into a session no connection carries (as
// Discord buffers for a dropped session), and RESUME replays it: the
// sequence numbers the client sees are contiguous across the two
// connections, with events among the replayed ones.
func TestLoadGoesOnWhileDetached(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2, IdentifyInterval: 1, EventRate: 200})
	a := dialRaw(t, srv, "")
	sid, _ := a.identify(srv, 0, 1)
	var last int64
	for last < 10 {
		if p := a.read(); p.Op == 0 {
			last = *p.S
		}
	}
	a.ws.Close() // a drop: resumable
	waitFor(t, srv, "the session detached", func(r Record) bool {
		ss, ok := r.Session(sid)
		return ok && !ss.Alive() && ss.Resumable
	})
	// Resume from the last one read: what the first connection had sent
	// but the client did not read is replayed too.
	srv.mu.Lock()
	ss := srv.sessions[sid]
	srv.mu.Unlock()
	ss.mu.Lock()
	at := ss.seq
	ss.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ss.mu.Lock()
		n := ss.seq
		ss.mu.Unlock()
		if n >= at+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no events into the detached session: seq %d since it detached at %d", n, at)
		}
	}
	b := dialRaw(t, srv, "")
	b.send(map[string]any{"op": 6, "d": map[string]any{"token": "Bot " + srv.Token(), "session_id": sid, "seq": last}})
	next, events := last+1, 0
	for {
		p := b.read()
		if p.Op != 0 {
			continue
		}
		if *p.S != next {
			t.Fatalf("after RESUME from %d: seq %d (%s), want %d", last, *p.S, p.T, next)
		}
		next++
		if p.T == "MESSAGE_CREATE" {
			events++
		}
		if p.T == "RESUMED" {
			break
		}
	}
	if events < 20 {
		t.Errorf("%d MESSAGE_CREATEs replayed; the load stopped while detached", events)
	}
	if r := srv.Record(); r.Starts.Used != 1 {
		t.Errorf("session starts used %d", r.Starts.Used)
	}
}

// RefuseResumes: the next RESUME is answered op 9 d:false and its session
// ended, so that no later RESUME takes it either.
func TestRefuseResumes(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1, IdentifyInterval: 1})
	a := dialRaw(t, srv, "")
	sid, _ := a.identify(srv, 0, 1)
	a.ws.Close()
	waitFor(t, srv, "the session detached", func(r Record) bool {
		ss, ok := r.Session(sid)
		return ok && !ss.Alive() && ss.Resumable
	})
	srv.RefuseResumes(1)
	for i := range 2 {
		b := dialRaw(t, srv, "")
		b.send(map[string]any{"op": 6, "d": map[string]any{"token": "Bot " + srv.Token(), "session_id": sid, "seq": 1}})
		for {
			p := b.read()
			if p.Op == 9 {
				break
			}
			if p.Op == 0 {
				t.Fatalf("RESUME %d: got %s, want op 9", i, p.T)
			}
		}
		b.ws.Close()
	}
	r := srv.Record()
	if ss, _ := r.Session(sid); ss.Resumable || len(r.Resumes) != 2 || r.Resumes[0].Outcome != OutcomeInvalidSession {
		t.Errorf("session %+v, resumes %+v", ss, r.Resumes)
	}
}
