package cluster

import (
	"reflect"
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"
)

func TestIdentityFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	const id, ids, count = "SHARDVISOR_CLUSTER_ID", "SHARDVISOR_SHARD_IDS", "SHARDVISOR_SHARD_COUNT"
	for _, tc := range []struct {
		name string
		env  func(string) string
		want Identity
		err  string
	}{
		{"ok", env(id, "2", ids, "10, 11,12", count, "20"), Identity{2, []int{10, 11, 12}, 20}, ""},
		{"no cluster id", env(ids, "1", count, "2"), Identity{}, "SHARDVISOR_CLUSTER_ID is not set"},
		{"bad cluster id", env(id, "x", ids, "1", count, "2"), Identity{}, `SHARDVISOR_CLUSTER_ID="x"`},
		{"negative cluster id", env(id, "-1", ids, "1", count, "2"), Identity{}, "SHARDVISOR_CLUSTER_ID"},
		{"zero count", env(id, "0", ids, "0", count, "0"), Identity{}, "SHARDVISOR_SHARD_COUNT"},
		{"no ids", env(id, "0", count, "2"), Identity{}, "SHARDVISOR_SHARD_IDS is not set"},
		{"bad id", env(id, "0", ids, "1,a", count, "2"), Identity{}, `"a" is not a shard id`},
		{"out of range", env(id, "0", ids, "2", count, "2"), Identity{}, "shard 2 out of range"},
		{"twice", env(id, "0", ids, "1,1", count, "2"), Identity{}, "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IdentityFromEnv(tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
}

func TestParseIntents(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want discordgo.Intent
		err  bool
	}{
		{"default", DefaultIntents, false},
		{"513", 513, false},
		{"guilds,guild_messages", discordgo.IntentGuilds | discordgo.IntentGuildMessages, false},
		{"default, MESSAGE_CONTENT", DefaultIntents | discordgo.IntentMessageContent, false},
		{"guilds,nope", 0, true},
		{"", 0, true},
	} {
		got, err := ParseIntents(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParseIntents(%q) = %d, %v", tc.in, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), FieldIntents) {
			t.Errorf("error %q does not name the flag", err)
		}
	}
	if s := FormatIntents(discordgo.IntentGuilds | discordgo.IntentMessageContent); s != "guilds,message_content" {
		t.Errorf("FormatIntents = %q", s)
	}
}

func TestParseCache(t *testing.T) {
	c, err := ParseCache(DefaultCache)
	if err != nil || c.Members || c.Presences || !c.Channels || !c.Roles || c.String() != "channels,threads,emojis,stickers,roles,voice" {
		t.Fatalf("default cache %+v (%s), %v", c, c, err)
	}
	if c, _ := ParseCache("none"); c.String() != "none" {
		t.Errorf("none = %s", c)
	}
	if c, _ := ParseCache("all,messages=50"); !c.Members || !c.Presences || c.Messages != 50 {
		t.Errorf("all,messages=50 = %+v", c)
	}
	for _, bad := range []string{"nope", "messages=x", "messages=-1"} {
		if _, err := ParseCache(bad); err == nil || !strings.Contains(err.Error(), FieldCache) {
			t.Errorf("ParseCache(%q) = %v", bad, err)
		}
	}
	var st discordgo.State
	c, _ = ParseCache("members,messages=5")
	c.apply(&st)
	if !st.TrackMembers || st.TrackChannels || st.MaxMessageCount != 5 {
		t.Errorf("apply: members %v channels %v messages %d", st.TrackMembers, st.TrackChannels, st.MaxMessageCount)
	}
}
