package discordtest_test

// A second, independent gateway client, written from Discord's
// documentation (developers/events/gateway.mdx, gateway-events.mdx,
// interactions/receiving-and-responding.mdx) and nothing of the fake's
// code or discordgo: the fake must serve a client that is not discordgo.
// It uses only the fake's public API as a test harness would (NewServer,
// URL, Token, Interact).

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/discordtest"
)

// gwPayload is the gateway payload structure: op, d, s, t.
type gwPayload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s"`
	T  *string         `json:"t"`
}

// gwShard is one shard's connection of the foreign client.
type gwShard struct {
	id, count int
	ws        *websocket.Conn
	events    chan gwPayload // dispatches and other payloads, inflated and decoded
	readErr   chan error     // the reader's end

	mu  sync.Mutex
	seq *int64 // last sequence number, for heartbeats
	wmu sync.Mutex
}

// apiDo does an API request (authorized when token is set) and decodes
// the answer into out.
func apiDo(ctx context.Context, hc *http.Client, method, url, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bot "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// dialShard connects with transport compression and starts the reader:
// "push received data to a buffer until you receive the 4-byte
// Z_SYNC_FLUSH suffix (00 00 ff ff)", then inflate it with the zlib context
// shared by the whole connection.
func dialShard(url string, id, count int) (*gwShard, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(url+"?v=10&encoding=json&compress=zlib-stream", nil)
	if err != nil {
		return nil, fmt.Errorf("dial shard %d: %w", id, err)
	}
	sh := &gwShard{id: id, count: count, ws: ws, events: make(chan gwPayload, 256), readErr: make(chan error, 1)}
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // websocket → inflater
		defer wg.Done()
		var buf []byte
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			buf = append(buf, msg...)
			if len(msg) < 4 || !bytes.Equal(msg[len(msg)-4:], []byte{0, 0, 0xff, 0xff}) {
				continue
			}
			if _, err := pw.Write(buf); err != nil {
				return
			}
			buf = nil
		}
	}()
	go func() { // inflater → payloads
		defer close(sh.events)
		var err error
		defer func() {
			pr.CloseWithError(err)
			wg.Wait()
			sh.readErr <- err
		}()
		var zr io.ReadCloser
		if zr, err = zlib.NewReader(pr); err != nil {
			return
		}
		dec := json.NewDecoder(zr)
		for {
			var p gwPayload
			if err = dec.Decode(&p); err != nil {
				return
			}
			if p.S != nil {
				sh.mu.Lock()
				sh.seq = p.S
				sh.mu.Unlock()
			}
			sh.events <- p
		}
	}()
	return sh, nil
}

func (sh *gwShard) send(op int, d any) error {
	b, err := json.Marshal(map[string]any{"op": op, "d": d})
	if err != nil {
		return err
	}
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	sh.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return sh.ws.WriteMessage(websocket.TextMessage, b)
}

// next returns the next payload, or an error when the connection ends or
// ctx is done.
func (sh *gwShard) next(ctx context.Context) (gwPayload, error) {
	select {
	case p, ok := <-sh.events:
		if !ok {
			return gwPayload{}, fmt.Errorf("shard %d: connection ended", sh.id)
		}
		return p, nil
	case <-ctx.Done():
		return gwPayload{}, fmt.Errorf("shard %d: %w", sh.id, ctx.Err())
	}
}

// heartbeat sends op 1 with the last sequence number: the first after
// interval*jitter, then every interval, until stop.
func (sh *gwShard) heartbeat(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTimer(time.Duration(rand.Float64() * float64(interval)))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		sh.mu.Lock()
		seq := sh.seq
		sh.mu.Unlock()
		if sh.send(1, seq) != nil {
			return
		}
		t.Reset(interval)
	}
}

// The foreign client reaches READY and every GUILD_CREATE on 4 shards with
// zlib-stream transport compression, heartbeats and gets ACKs, and answers
// an interaction through the REST callback.
func TestForeignClient(t *testing.T) {
	t.Parallel()
	srv, err := discordtest.NewServer(discordtest.Options{Guilds: 10, Shards: 4, MaxConcurrency: 4,
		HeartbeatInterval: 300 * time.Millisecond, RolesPerGuild: 2, MembersPerGuild: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	api := srv.URL() + "/api/v10/"

	var gw struct {
		URL    string `json:"url"`
		Shards int    `json:"shards"`
		Limit  struct {
			MaxConcurrency int `json:"max_concurrency"`
		} `json:"session_start_limit"`
	}
	if err := apiDo(ctx, hc, "GET", api+"gateway/bot", srv.Token(), nil, &gw); err != nil {
		t.Fatal(err)
	}
	if gw.Shards != 4 || gw.Limit.MaxConcurrency != 4 {
		t.Fatalf("gateway/bot: %+v, want 4 shards, max_concurrency 4", gw)
	}

	stop := make(chan struct{})
	var hb sync.WaitGroup
	shards := make([]*gwShard, gw.Shards)
	defer func() {
		close(stop)
		hb.Wait()
		for _, sh := range shards {
			if sh == nil {
				continue
			}
			sh.wmu.Lock()
			sh.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(5*time.Second))
			sh.wmu.Unlock()
			for range sh.events { // until the server closes
			}
			sh.ws.Close()
			<-sh.readErr

		}
	}()

	// Every shard is in its own bucket (shard_id % max_concurrency), so
	// all four may IDENTIFY at once.
	appID := ""
	guildsSeen := map[string]int{} // guild id → shard
	for i := range shards {
		sh, err := dialShard(gw.URL, i, gw.Shards)
		if err != nil {
			t.Fatal(err)
		}
		shards[i] = sh
		p, err := sh.next(ctx)
		if err != nil || p.Op != 10 {
			t.Fatalf("shard %d: first payload op %d (%v), want 10 HELLO", i, p.Op, err)
		}
		var hello struct {
			HeartbeatInterval int64 `json:"heartbeat_interval"`
		}
		if err := json.Unmarshal(p.D, &hello); err != nil || hello.HeartbeatInterval <= 0 {
			t.Fatalf("shard %d: HELLO %s: %v", i, p.D, err)
		}
		hb.Add(1)
		go func() {
			defer hb.Done()
			sh.heartbeat(time.Duration(hello.HeartbeatInterval)*time.Millisecond, stop)
		}()
		err = sh.send(2, map[string]any{
			"token": srv.Token(), "intents": 1, "shard": []int{i, gw.Shards},
			"properties": map[string]string{"os": "linux", "browser": "foreign", "device": "foreign"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, sh := range shards {
		var ready struct {
			SessionID   string              `json:"session_id"`
			Shard       [2]int              `json:"shard"`
			Application struct{ ID string } `json:"application"`
			Guilds      []struct {
				ID          string `json:"id"`
				Unavailable bool   `json:"unavailable"`
			} `json:"guilds"`
		}
		acked := false
		pending := map[string]bool{}
		for gotReady := false; !gotReady || len(pending) > 0 || !acked; {
			p, err := sh.next(ctx)
			if err != nil {
				t.Fatalf("shard %d: waiting for READY, GUILD_CREATEs and an ACK: %v (ready %v, %d guilds pending)",
					sh.id, err, gotReady, len(pending))
			}
			switch {
			case p.Op == 11:
				acked = true
			case p.Op == 0 && *p.T == "READY":
				if err := json.Unmarshal(p.D, &ready); err != nil {
					t.Fatal(err)
				}
				if ready.SessionID == "" || ready.Shard != [2]int{sh.id, gw.Shards} {
					t.Fatalf("shard %d: READY %s", sh.id, p.D)
				}
				appID = ready.Application.ID
				for _, g := range ready.Guilds {
					pending[g.ID] = true
				}
				gotReady = true
			case p.Op == 0 && *p.T == "GUILD_CREATE":
				var g struct {
					ID    string `json:"id"`
					Roles []struct {
						Colors struct {
							Primary *int `json:"primary_color"`
						} `json:"colors"`
					} `json:"roles"`
				}
				if err := json.Unmarshal(p.D, &g); err != nil || !pending[g.ID] {
					t.Fatalf("shard %d: GUILD_CREATE %s not announced in READY (%v)", sh.id, g.ID, err)
				}
				id, _ := strconv.ParseUint(g.ID, 10, 64)
				if int(id>>22)%gw.Shards != sh.id {
					t.Errorf("guild %s on shard %d, want (id >> 22) %% %d", g.ID, sh.id, gw.Shards)
				}
				for _, r := range g.Roles {
					if r.Colors.Primary == nil {
						t.Errorf("guild %s: a role without colors.primary_color", g.ID)
					}
				}
				delete(pending, g.ID)
				guildsSeen[g.ID] = sh.id
			}
		}
	}
	if len(guildsSeen) != 10 {
		t.Fatalf("saw %d guilds on 4 shards, want 10", len(guildsSeen))
	}

	// Register /ping, then have a user run it in a guild of shard 3.
	if err := apiDo(ctx, hc, "PUT", api+"applications/"+appID+"/commands", srv.Token(),
		[]map[string]any{{"name": "ping", "description": "replies pong", "type": 1}}, nil); err != nil {
		t.Fatal(err)
	}
	guild := ""
	for g, s := range guildsSeen {
		if s == 3 {
			guild = g
		}
	}
	type result struct {
		rp  discordtest.Reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		rp, err := srv.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: "ping"})
		done <- result{rp, err}
	}()
	for {
		p, err := shards[3].next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Op != 0 || *p.T != "INTERACTION_CREATE" {
			continue
		}
		var in struct {
			ID, Token string
			Data      struct{ Name string }
			Channel   struct{ ID string }
			Owners    map[string]string `json:"authorizing_integration_owners"`
		}
		if err := json.Unmarshal(p.D, &in); err != nil {
			t.Fatal(err)
		}
		if in.Data.Name != "ping" || in.Channel.ID == "" || in.Owners["0"] != guild {
			t.Errorf("INTERACTION_CREATE %s", p.D)
		}
		if err := apiDo(ctx, hc, "POST", api+"interactions/"+in.ID+"/"+in.Token+"/callback", "",
			map[string]any{"type": 4, "data": map[string]any{"content": "pong from a foreign client"}}, nil); err != nil {
			t.Fatal(err)
		}
		break
	}
	r := <-done
	if r.err != nil || r.rp.Content != "pong from a foreign client" || r.rp.Status != http.StatusNoContent {
		t.Fatalf("Interact = %+v, %v", r.rp, r.err)
	}
}
