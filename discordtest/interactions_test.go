package discordtest

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/bwmarrin/discordgo"
)

// Slash command round trip with discordgo answering "Pong!" via
// InteractionRespond, in a guild and in a DM (which goes to shard 0 only).
func TestInteractionRoundTrip(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 4, Shards: 2, MaxConcurrency: 2})
	type seen struct {
		shard  int
		inter  *discordgo.Interaction
		option map[string]any
	}
	got := make(chan seen, 4)
	var bots []*discordgo.Session
	for shard := range 2 {
		b := newBot(t, srv, shard, 2)
		b.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
			opts := map[string]any{}
			for _, o := range i.ApplicationCommandData().Options {
				opts[o.Name] = o.Value
				opts[o.Name+".type"] = o.Type
			}
			got <- seen{shard, i.Interaction, opts}
			pong(s, i)
		})
		if err := b.Open(); err != nil {
			t.Fatal(err)
		}
		bots = append(bots, b)
	}
	waitFor(t, srv, "both live", func(r Record) bool {
		return r.Shard(0, 2).Live == 1 && r.Shard(1, 2).Live == 1 && settled(r, 0) && settled(r, 1)
	})
	guild := srv.GuildIDsOf(1, 2)[0]
	rp, err := srv.Interact(testContext(t), Interaction{GuildID: guild, Command: "ping", Options: []Option{
		{Name: "n", Value: 3}, {Name: "text", Value: "hi"}, {Name: "flag", Value: true}, {Name: "x", Value: 1.5},
	}})
	if err != nil || rp.Content != "Pong!" || rp.Type != 4 || rp.Via != "callback" || rp.Status != 204 || rp.Latency <= 0 {
		t.Fatalf("Interact = %+v, %v", rp, err)
	}
	s := <-got
	in := s.inter
	if s.shard != 1 || in.GuildID != guild || in.Member == nil || in.Member.User == nil || in.User != nil ||
		in.AppID != srv.ApplicationID() || in.Token == "" || in.Member.Permissions != 8 || in.ChannelID == "" {
		t.Errorf("guild interaction on shard %d: %+v", s.shard, in)
	}
	if s.option["n"] != 3.0 || s.option["n.type"] != discordgo.ApplicationCommandOptionInteger ||
		s.option["text"] != "hi" || s.option["flag"] != true || s.option["x.type"] != discordgo.ApplicationCommandOptionNumber {
		t.Errorf("options %v", s.option)
	}
	rp, err = srv.Interact(testContext(t), Interaction{Command: "ping"})
	if err != nil || rp.Content != "Pong!" {
		t.Fatalf("DM Interact = %+v, %v", rp, err)
	}
	s = <-got
	if s.shard != 0 || s.inter.GuildID != "" || s.inter.User == nil || s.inter.Member != nil {
		t.Errorf("DM interaction on shard %d: %+v", s.shard, s.inter)
	}
	r := srv.Record()
	if len(r.Interactions) != 2 || r.Interactions[0].Shard != 1 || r.Interactions[1].Shard != 0 ||
		len(r.Interactions[1].Sessions) != 1 || len(r.Interactions[0].Replies) != 1 {
		t.Errorf("interactions %+v", r.Interactions)
	}
	if _, err := srv.Interact(testContext(t), Interaction{GuildID: "42", Command: "ping"}); err == nil {
		t.Error("Interact with an unknown guild succeeded")
	}
	if _, err := srv.Interact(testContext(t), Interaction{}); err == nil {
		t.Error("Interact without a command succeeded")
	}
	closeBots(bots...)
}

// Two live sessions of one shard: the record shows MaxLive 2, and both
// answer the interaction; the second callback is refused (40060) and
// recorded.
func TestDuplicateLiveSessionAnswersTwice(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2, IdentifyInterval: 1})
	second := make(chan error, 2)
	var bots []*discordgo.Session
	for range 2 {
		b := newBot(t, srv, 0, 1)
		b.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
			second <- s.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
				Type: discordgo.InteractionResponseChannelMessageWithSource,
				Data: &discordgo.InteractionResponseData{Content: "Pong!"},
			})
		})
		if err := b.Open(); err != nil {
			t.Fatal(err)
		}
		bots = append(bots, b)
	}
	r := waitFor(t, srv, "two live sessions", func(r Record) bool { return r.Shard(0, 1).Live == 2 && settled(r, 0) })
	if r.MaxLive != 2 || r.Shard(0, 1).MaxLive != 2 {
		t.Errorf("max live %d", r.MaxLive)
	}
	if _, err := srv.Interact(testContext(t), Interaction{GuildID: srv.GuildIDs()[0], Command: "ping"}); err != nil {
		t.Fatal(err)
	}
	r = waitFor(t, srv, "two replies", func(r Record) bool { return len(r.Interactions[0].Replies) == 2 })
	statuses := []int{r.Interactions[0].Replies[0].Status, r.Interactions[0].Replies[1].Status}
	if statuses[0] != 204 || statuses[1] != 400 || len(r.Interactions[0].Sessions) != 2 {
		t.Errorf("replies %+v", r.Interactions[0].Replies)
	}
	errs := []error{<-second, <-second}
	var re *discordgo.RESTError
	if !errors.As(errors.Join(errs...), &re) || re.Message == nil || re.Message.Code != 40060 {
		t.Errorf("second InteractionRespond: %v", errs)
	}
	closeBots(bots...)
	r = srv.Record()
	if r.MaxLive != 2 || r.Shard(0, 1).Live != 0 {
		t.Errorf("after close: %+v", r.Shards)
	}
}

// A deferred reply completes with its edit; follow-ups are recorded.
func TestInteractionDeferredAndFollowup(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	b := newBot(t, srv, 0, 1)
	followed := make(chan error, 1)
	b.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
		if _, err := s.InteractionResponseEdit(i.Interaction, &discordgo.WebhookEdit{}); err == nil {
			followed <- errors.New("editing @original before any callback succeeded")
			return
		}
		s.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredChannelMessageWithSource})
		content := "done"
		if _, err := s.InteractionResponseEdit(i.Interaction, &discordgo.WebhookEdit{Content: &content}); err != nil {
			followed <- err
			return
		}
		m, err := s.FollowupMessageCreate(i.Interaction, true, &discordgo.WebhookParams{Content: "more"})
		if err == nil && (m.Content != "more" || m.ID == "") {
			err = errors.New("follow-up message " + m.Content)
		}
		followed <- err
	})
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, srv, 0, 1)
	rp, err := srv.Interact(testContext(t), Interaction{GuildID: srv.GuildIDs()[0], Command: "slow"})
	if err != nil || rp.Via != "edit" || rp.Content != "done" {
		t.Fatalf("Interact = %+v, %v", rp, err)
	}
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
	r := srv.Record()
	rs := r.Interactions[0].Replies
	if len(rs) != 3 || rs[0].Type != 5 || rs[1].Via != "edit" || rs[2].Via != "followup" || rs[2].Content != "more" {
		t.Errorf("replies %+v", rs)
	}
	if n := r.RESTCalls("PATCH webhooks/{app}/{token}/messages/{msg}", 404); n != 1 {
		t.Errorf("edits before the callback answered 404: %d", n)
	}
	closeBots(b)
}

func TestInteractNoSession(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{})
	_, err := srv.Interact(testContext(t), Interaction{Command: "ping"})
	var ns noSessionError
	if !errors.As(err, &ns) {
		t.Fatalf("Interact without sessions: %v", err)
	}
}

// data.guild_id is set only for a command registered in the interaction's
// guild: a client takes a global command carrying it for a guild command
// it does not know (disnake then overwrites the guild's commands).
func TestInteractionCommandScope(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 1})
	guild := srv.GuildIDs()[0]
	app := "/api/v10/applications/" + srv.ApplicationID()
	for path, name := range map[string]string{app + "/commands": "global", app + "/guilds/" + guild + "/commands": "local"} {
		if resp, b := restDo(t, srv, "PUT", path, bot(srv), []map[string]any{{"name": name, "description": "d"}}); resp.StatusCode != 200 {
			t.Fatalf("PUT %s: %d %s", path, resp.StatusCode, b)
		}
	}
	c := dialRaw(t, srv, "")
	c.identify(srv, 0, 1)
	c.readUntil(0, "GUILD_CREATE")
	for _, tc := range []struct {
		command, guildID string
	}{{"global", ""}, {"local", guild}, {"unregistered", ""}} {
		done := make(chan error, 1)
		go func() {
			_, err := srv.Interact(testContext(t), Interaction{GuildID: guild, Command: tc.command})
			done <- err
		}()
		p := c.readUntil(0, "INTERACTION_CREATE")
		var d struct {
			ID, Token string
			Data      map[string]json.RawMessage
		}
		if err := json.Unmarshal(p.D, &d); err != nil {
			t.Fatal(err)
		}
		got := ""
		if raw, ok := d.Data["guild_id"]; ok {
			json.Unmarshal(raw, &got)
		}
		if got != tc.guildID {
			t.Errorf("%s command: data.guild_id %q, want %q", tc.command, got, tc.guildID)
		}
		resp, b := restDo(t, srv, "POST", "/api/v10/interactions/"+d.ID+"/"+d.Token+"/callback", "",
			map[string]any{"type": 4, "data": map[string]any{"content": "ok"}})
		if resp.StatusCode != 204 {
			t.Fatalf("callback: %d %s", resp.StatusCode, b)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
