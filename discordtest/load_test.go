package discordtest

import (
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
)

// GUILD_CREATE carries the configured channels, roles and members (with a
// user and an RFC 3339 joined_at), and discordgo's State caches them.
func TestGuildPayloadSizes(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 2, ChannelsPerGuild: 3, RolesPerGuild: 4, MembersPerGuild: 300})
	b := newBot(t, srv, 0, 1)
	evs := newEvents()
	b.AddHandler(evs.add)
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	evs.waitCount(t, "GUILD_CREATE", 2)
	for _, id := range srv.GuildIDs() {
		g, err := b.State.Guild(id)
		if err != nil {
			t.Fatalf("state guild %s: %v", id, err)
		}
		if len(g.Channels) != 3 || len(g.Roles) != 4 || len(g.Members) != 300 || g.MemberCount != 300 || !g.Large {
			t.Errorf("guild %s: %d channels, %d roles, %d members (count %d), large %v", id, len(g.Channels), len(g.Roles), len(g.Members), g.MemberCount, g.Large)
		}
		if g.Roles[0].ID != id || g.Roles[0].Name != "@everyone" || g.Members[0].User.ID != srv.ApplicationID() {
			t.Errorf("guild %s: first role %+v, first member %+v", id, g.Roles[0], g.Members[0].User)
		}
		for _, m := range g.Members {
			if m.User == nil || m.JoinedAt.IsZero() || m.GuildID != id {
				t.Fatalf("member %+v", m)
			}
		}
		if _, err := b.State.Channel(g.Channels[2].ID); err != nil {
			t.Errorf("channel not in state: %v", err)
		}
	}
	closeBots(b)
}

// MESSAGE_CREATE at the event rate, to live sessions (and detached ones,
// TestLoadGoesOnWhileDetached); SetEventRate
// changes it at run time.
func TestEventRate(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 3, Shards: 1, EventRate: 200})
	b := newBot(t, srv, 0, 1)
	msgs := make(chan *discordgo.MessageCreate, 1000)
	b.AddHandler(func(_ *discordgo.Session, m *discordgo.MessageCreate) {
		select {
		case msgs <- m:
		default:
		}
	})
	start := time.Now()
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, srv, "50 messages", func(r Record) bool { return len(r.Sessions) == 1 && r.Sessions[0].Dispatches >= 4+50 })
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("50 messages at 200/s took only %v", el)
	}
	m := <-msgs
	if _, ok := guildIndex(m.GuildID, 3); !ok || m.ChannelID == "" || m.Author == nil || m.Member == nil || m.Content == "" || m.Timestamp.IsZero() {
		t.Errorf("message %+v", m.Message)
	}
	srv.SetEventRate(0)
	srv.SetEventRate(-1) // ignored
	closeBots(b)
}
