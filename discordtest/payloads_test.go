package discordtest

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/bwmarrin/discordgo"
)

// Every payload kind the fake emits is decoded and checked against the
// field lists of Discord's documentation (docSchemas): a missing field that
// Discord always sends, or a wrong type or nullability, fails. Each schema
// of the table must have been seen.
func TestPayloadsHaveDocumentedFields(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2, ChannelsPerGuild: 2, RolesPerGuild: 2, MembersPerGuild: 3,
		ThreadsPerGuild: 1, EmojisPerGuild: 1, StickersPerGuild: 1})
	chk := &schemaChecker{seen: map[string]bool{}}
	guild := srv.GuildIDs()[0]
	app := "/api/v10/applications/" + srv.ApplicationID()
	if resp, b := restDo(t, srv, "PUT", app+"/guilds/"+guild+"/commands", bot(srv),
		[]map[string]any{{"name": "local", "description": "d"}}); resp.StatusCode != 200 {
		t.Fatalf("PUT guild commands: %d %s", resp.StatusCode, b)
	}

	c := dialRawNoHello(t, srv, "?v=10&encoding=json")
	hello := c.read()
	chk.checkJSON("HELLO", "hello", hello.D)
	c.send(identifyPayloadFor(srv.Token(), 0, 1, discordgo.IntentsGuilds|discordgo.IntentsGuildMessages, false))
	ready := c.readUntil(0, "READY")
	chk.checkJSON("READY", "ready", ready.D)
	for i := range 2 {
		p := c.readUntil(0, "GUILD_CREATE")
		chk.checkJSON(fmt.Sprintf("GUILD_CREATE#%d", i), "guild_create", p.D)
	}

	for _, tc := range []struct {
		in     Interaction
		schema string
	}{
		{Interaction{GuildID: guild, Command: "local", Options: []Option{{Name: "n", Value: 2}}}, "interaction_guild"},
		{Interaction{GuildID: guild, Command: "global"}, "interaction_guild"},
		{Interaction{Command: "dm"}, "interaction_dm"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := srv.Interact(testContext(t), tc.in)
			done <- err
		}()
		p := c.readUntil(0, "INTERACTION_CREATE")
		chk.checkJSON("INTERACTION_CREATE "+tc.in.Command, tc.schema, p.D)
		var d struct{ ID, Token string }
		json.Unmarshal(p.D, &d)
		// Answer with a follow-up message (?wait=true returns it): the
		// deferred callback first.
		if resp, b := restDo(t, srv, "POST", "/api/v10/interactions/"+d.ID+"/"+d.Token+"/callback", "",
			map[string]any{"type": 5}); resp.StatusCode != 204 {
			t.Fatalf("callback: %d %s", resp.StatusCode, b)
		}
		resp, b := restDo(t, srv, "POST", "/api/v10/webhooks/"+srv.ApplicationID()+"/"+d.Token+"?wait=true", "",
			map[string]any{"content": "ok"})
		if resp.StatusCode != 200 {
			t.Fatalf("follow-up: %d %s", resp.StatusCode, b)
		}
		chk.checkJSON("POST webhooks follow-up", "message", b)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	srv.SetEventRate(20)
	p := c.readUntil(0, "MESSAGE_CREATE")
	srv.SetEventRate(0)
	chk.checkJSON("MESSAGE_CREATE", "message_create", p.D)

	for path, schema := range map[string]string{
		"/api/v10/gateway/bot":             "gateway_bot",
		"/api/v10/users/@me":               "user",
		"/api/v10/applications/@me":        "application_me",
		"/api/v10/oauth2/applications/@me": "application_me",
		"/api/v9/oauth2/applications/@me":  "application_me",
	} {
		resp, b := restDo(t, srv, "GET", path, bot(srv), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		chk.checkJSON("GET "+path, schema, b)
	}
	resp, b := restDo(t, srv, "POST", "/api/v10/channels/"+guild+"/messages", bot(srv), map[string]any{"content": "hi"})
	if resp.StatusCode != 200 {
		t.Fatalf("POST message: %d %s", resp.StatusCode, b)
	}
	chk.checkJSON("POST channels/{id}/messages", "message", b)

	for _, e := range chk.errs {
		t.Error(e)
	}
	// Schemas of the table the fake never sends would be dead weight.
	for name := range docSchemas {
		if !chk.seen[name] && name != "interaction" && name != "application" {
			t.Errorf("schema %s: no payload of the fake was checked against it", name)
		}
	}
}
