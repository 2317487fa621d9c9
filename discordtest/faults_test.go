package discordtest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/internal/apiurl"
)

// waitSends waits until the fake has handled n payloads of connection id.
func waitSends(t *testing.T, srv *Server, id uint64, n int) {
	t.Helper()
	waitFor(t, srv, "payloads handled", func(r Record) bool {
		for _, c := range r.Connections {
			if c.ID == id {
				return c.Sends >= n
			}
		}
		return false
	})
}

func lastConn(srv *Server) uint64 {
	r := srv.Record()
	return r.Connections[len(r.Connections)-1].ID
}

// A zombie shard's heartbeats get no ACK; turned off, they do again.
func TestZombieRaw(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	c := dialRaw(t, srv, "")
	id := lastConn(srv)
	c.identify(srv, 0, 1)
	c.readUntil(0, "GUILD_CREATE")
	srv.Zombie(0, true)
	c.send(map[string]any{"op": 1, "d": 2})
	waitSends(t, srv, id, 2)
	srv.Reconnect(0) // queued after whatever the heartbeat produced
	if p := c.read(); p.Op != 7 {
		t.Fatalf("zombie: got op %d before the op 7, want no ACK", p.Op)
	}
	srv.Zombie(0, false)
	c.send(map[string]any{"op": 1, "d": 2})
	if p := c.read(); p.Op != 11 {
		t.Fatalf("after zombie off: op %d, want 11", p.Op)
	}
}

// discordgo notices a zombie connection after five intervals without an
// ACK and closes it with 1000, which ends the session; opened again, its
// RESUME gets op 9 and it identifies anew.
func TestZombieDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1, HeartbeatInterval: 50 * time.Millisecond, IdentifyInterval: 1})
	b := newBot(t, srv, 0, 1)
	gone := make(chan struct{}, 1)
	b.AddHandler(func(*discordgo.Session, *discordgo.Disconnect) {
		select {
		case gone <- struct{}{}:
		default:
		}
	})
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, srv, 0, 1)
	srv.Zombie(0, true)
	select {
	case <-gone:
	case <-testContext(t).Done():
		t.Fatal("discordgo never noticed the zombie connection")
	}
	r := waitFor(t, srv, "the client's close", func(r Record) bool { return !r.Sessions[0].Alive() })
	if ss := r.Sessions[0]; ss.ClosedBy != ClosedByClient || ss.CloseCode != 1000 || ss.Resumable {
		t.Errorf("zombie session ended as %+v", ss)
	}
	srv.Zombie(0, false)
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	r = waitFor(t, srv, "a new session", func(r Record) bool { return r.Identified(0, OutcomeReady) == 2 && r.Shard(0, 1).Live == 1 })
	if len(r.Resumes) != 1 || r.Resumes[0].Outcome != OutcomeInvalidSession {
		t.Errorf("resumes %+v", r.Resumes)
	}
	closeBots(b)
}

// op 7: discordgo closes with 1012 and resumes; the session never has two
// live connections.
func TestReconnectDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2})
	b := newBot(t, srv, 0, 1)
	b.ShouldReconnectOnError = true
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, srv, 0, 1)
	if n := srv.Reconnect(0); n != 1 {
		t.Fatalf("Reconnect acted on %d", n)
	}
	r := waitFor(t, srv, "resumed", func(r Record) bool { return len(r.Resumes) == 1 && r.Shard(0, 1).Live == 1 && settled(r, 0) })
	if r.Resumes[0].Outcome != OutcomeResumed || r.Connections[0].CloseCode != 1012 || r.Connections[0].ClosedBy != ClosedByClient {
		t.Errorf("resume %+v, first connection %+v", r.Resumes[0], r.Connections[0])
	}
	if r.MaxLive != 1 || len(r.Sessions) != 1 || r.Starts.Used != 1 {
		t.Errorf("max live %d, %d sessions, %d starts", r.MaxLive, len(r.Sessions), r.Starts.Used)
	}
	closeBots(b)
}

// op 9 from the server: discordgo identifies inline on the same socket. The
// session is ended (d:false) or left resumable (d:true).
func TestInvalidSessionDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2, IdentifyInterval: 1})
	b := newBot(t, srv, 0, 1)
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, srv, 0, 1)
	for i, resumable := range []bool{false, true} {
		if n := srv.InvalidSession(0, resumable); n != 1 {
			t.Fatalf("InvalidSession acted on %d", n)
		}
		waitFor(t, srv, "a new session", func(r Record) bool { return len(r.Sessions) == i+2 && r.Shard(0, 1).Live == 1 })
	}
	r := srv.Record()
	if s := r.Sessions[0]; s.Resumable || s.ClosedBy != ClosedByServer || s.Alive() {
		t.Errorf("session after op 9 false: %+v", s)
	}
	if s := r.Sessions[1]; !s.Resumable || s.Alive() {
		t.Errorf("session after op 9 true: %+v", s)
	}
	if len(r.Connections) != 1 || r.MaxLive != 1 {
		t.Errorf("%d connections, max live %d: want 1 and 1", len(r.Connections), r.MaxLive)
	}
	closeBots(b)
}

func TestMalformedFrames(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	c := dialRaw(t, srv, "")
	c.identify(srv, 0, 1)
	c.readUntil(0, "GUILD_CREATE")
	for _, k := range []Malformed{MalformedJSON, MalformedUnknownOp, MalformedBinary, MalformedOversized} {
		if n := srv.SendMalformed(0, k); n != 1 {
			t.Fatalf("SendMalformed(%s) acted on %d", k, n)
		}
	}
	want := []struct {
		mt     int
		prefix string
	}{
		{websocket.TextMessage, `{"t":"MESSAGE_CREATE","s":`},
		{websocket.TextMessage, `{"t":null,"s":null,"op":42`},
		{websocket.BinaryMessage, "this is not"},
		{websocket.TextMessage, `{"t":"MESSAGE_CREATE","s":3,"op":0`},
	}
	for _, w := range want {
		c.ws.SetReadDeadline(time.Now().Add(waitTimeout))
		mt, b, err := c.ws.ReadMessage()
		if err != nil || mt != w.mt || !bytes.HasPrefix(b, []byte(w.prefix)) {
			t.Fatalf("got %d %q, %v; want %d %q", mt, truncate(string(b), 40), err, w.mt, w.prefix)
		}
		if w.prefix[len(w.prefix)-1] == '0' && len(b) < 1<<20 {
			t.Errorf("oversized frame of %d bytes", len(b))
		}
	}
	if srv.SendMalformed(0, "nonsense") != 0 {
		t.Error("an unknown kind acted")
	}
}

// discordgo survives every malformed frame: it still answers interactions.
func TestMalformedDiscordgoSurvives(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	b := newBot(t, srv, 0, 1)
	b.AddHandler(pong)
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, srv, 0, 1)
	for _, k := range []Malformed{MalformedJSON, MalformedUnknownOp, MalformedBinary, MalformedOversized} {
		srv.SendMalformed(0, k)
	}
	if rp, err := srv.Interact(testContext(t), Interaction{GuildID: srv.GuildIDs()[0], Command: "ping"}); err != nil || rp.Content != "Pong!" {
		t.Errorf("Interact after malformed frames: %+v, %v", rp, err)
	}
	closeBots(b)
}

func TestHelloDelay(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	const d = 300 * time.Millisecond
	srv.SetHelloDelay(d)
	start := time.Now()
	dialRaw(t, srv, "")
	if took := time.Since(start); took < d {
		t.Errorf("HELLO after %v, want at least %v", took, d)
	}
	b := newBot(t, srv, 0, 1)
	if err := b.Open(); err != nil {
		t.Fatalf("discordgo with a delayed HELLO: %v", err)
	}
	closeBots(b)
}

func TestReconnectInsteadOfReadyRaw(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1, IdentifyInterval: 1})
	srv.ReconnectInsteadOfReady(0)
	c := dialRaw(t, srv, "")
	c.send(identifyPayloadFor(srv.Token(), 0, 1, discordgo.IntentsGuilds, false))
	if p := c.read(); p.Op != 7 {
		t.Fatalf("after IDENTIFY: op %d, want 7", p.Op)
	}
	c2 := dialRaw(t, srv, "")
	c2.identify(srv, 0, 1) // one-shot: the next IDENTIFY is accepted
	r := srv.Record()
	if r.Identifies[0].Outcome != OutcomeReconnect || r.Identifies[1].Outcome != OutcomeReady || r.Starts.Used != 2 {
		t.Errorf("identifies %+v, starts %+v", r.Identifies, r.Starts)
	}
}

// op 7 right after IDENTIFY, before READY, deadlocks discordgo v0.29.0's
// Open (it holds the session lock and CloseWithCode waits for it). The
// child process that shows it cannot be cleaned up from inside, so the
// session runs in a child test process that is killed afterwards.
func TestReconnectInsteadOfReadyHangsDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	srv.ReconnectInsteadOfReady(0)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDiscordgoOpen$", "-test.v", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), "DISCORDTEST_HELPER_URL="+srv.URL(), "DISCORDTEST_HELPER_TOKEN="+srv.Token())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waitFor(t, srv, "the op 7 in place of READY", func(r Record) bool { return r.Identified(0, OutcomeReconnect) == 1 })
	// Open has to return promptly to the next line; give it far longer.
	hang := time.NewTimer(2 * time.Second)
	defer hang.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				if !strings.Contains(stderr.String(), "deadlock") {
					t.Fatalf("the child exited without opening or deadlocking: %s", stderr.String())
				}
				return
			}
			if strings.Contains(l, "OPEN RETURNED") {
				t.Fatalf("discordgo's Open returned after op 7 instead of READY: %s", l)
			}
		case <-hang.C:
			return // Open is stuck, as expected
		}
	}
}

// TestHelperDiscordgoOpen runs in the child process of
// TestReconnectInsteadOfReadyHangsDiscordgo.
func TestHelperDiscordgoOpen(t *testing.T) {
	url := os.Getenv("DISCORDTEST_HELPER_URL")
	if url == "" {
		t.Skip("helper process only")
	}
	base, err := apiurl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := discordgo.New("Bot " + os.Getenv("DISCORDTEST_HELPER_TOKEN"))
	b.Client.Transport = apiurl.Transport(base, nil)
	b.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	b.ShouldReconnectOnError = false
	err = b.Open()
	os.Stdout.WriteString("OPEN RETURNED " + errString(err) + "\n")
	os.Exit(0)
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func pong(s *discordgo.Session, i *discordgo.InteractionCreate) {
	s.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Content: "Pong!"},
	})
}

func TestInvalidSessionDuringGuildsRaw(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 5, IdentifyInterval: 1})
	srv.InvalidSessionDuringGuilds(0, 2)
	srv.InvalidSessionDuringGuilds(0, 0)
	c := dialRaw(t, srv, "")
	first, _ := c.identify(srv, 0, 1)
	for range 2 {
		if p := c.read(); p.Op != 0 || p.T != "GUILD_CREATE" {
			t.Fatalf("after READY: op %d t %q, want GUILD_CREATE", p.Op, p.T)
		}
	}
	if p := c.read(); p.Op != 9 || string(p.D) != "false" {
		t.Fatalf("after 2 GUILD_CREATEs: op %d d %s, want op 9 d false", p.Op, p.D)
	}
	// The socket stays open: IDENTIFY again on it. The second fault cuts
	// before the first GUILD_CREATE.
	second, _ := c.identify(srv, 0, 1)
	if p := c.read(); p.Op != 9 {
		t.Fatalf("after READY of the second session: op %d t %q, want op 9", p.Op, p.T)
	}
	third, _ := c.identify(srv, 0, 1) // both faults spent: every guild
	for range 5 {
		if p := c.read(); p.Op != 0 || p.T != "GUILD_CREATE" {
			t.Fatalf("third session: op %d t %q, want GUILD_CREATE", p.Op, p.T)
		}
	}
	r := srv.Record()
	if len(r.Sessions) != 3 {
		t.Fatalf("%d sessions, want 3", len(r.Sessions))
	}
	for i, id := range []string{first, second} {
		if sr := r.Sessions[i]; sr.ID != id || sr.End.IsZero() || sr.Resumable || sr.ClosedBy != ClosedByServer {
			t.Errorf("session %d: %+v, want ended by the server, not resumable", i, sr)
		}
	}
	if sr := r.Sessions[2]; sr.ID != third || !sr.End.IsZero() {
		t.Errorf("third session: %+v, want live", sr)
	}
}
