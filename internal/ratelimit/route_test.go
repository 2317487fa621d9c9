package ratelimit

import (
	"strings"
	"testing"
)

func TestRouteKey(t *testing.T) {
	const tok = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpYYUJjRGVGZ0hpSmtMbU5vUHFSc1R1VnZXeFl6"
	for _, tc := range []struct {
		method, path string
		key          string
		route        string
		major        string
		outside      bool
	}{
		// Prefixes, queries and case.
		{"POST", "/api/v10/channels/111/messages", "POST channels/111/messages", "POST channels/:channel/messages", "111", false},
		{"post", "api/v9/channels/111/messages/", "POST channels/111/messages", "POST channels/:channel/messages", "111", false},
		{"POST", "channels/111/messages", "POST channels/111/messages", "POST channels/:channel/messages", "111", false},
		{"POST", "https://discord.com/api/v10/channels/111/messages?x=1", "POST channels/111/messages", "POST channels/:channel/messages", "111", false},
		{"GET", "/api/channels/111", "GET channels/111", "GET channels/:channel", "111", false},
		{"GET", "/api/v10/gateway/bot", "GET gateway/bot", "GET gateway/bot", "", false},
		{"GET", "/api/v10/", "GET ", "GET ", "", false},

		// Channels: the channel is the major parameter, other ids are not.
		{"GET", "channels/111/messages/222", "GET channels/111/messages/:id", "GET channels/:channel/messages/:id", "111", false},
		{"PATCH", "channels/111/messages/222", "PATCH channels/111/messages/:id", "PATCH channels/:channel/messages/:id", "111", false},
		{"DELETE", "channels/111/messages/222", "DELETE channels/111/messages/:id", "DELETE channels/:channel/messages/:id", "111", false},
		{"GET", "channels/111/messages?limit=50&before=333", "GET channels/111/messages", "GET channels/:channel/messages", "111", false},
		{"POST", "channels/111/messages/bulk-delete", "POST channels/111/messages/bulk-delete", "POST channels/:channel/messages/bulk-delete", "111", false},
		{"POST", "channels/111/messages/222/crosspost", "POST channels/111/messages/:id/crosspost", "POST channels/:channel/messages/:id/crosspost", "111", false},
		{"POST", "channels/111/messages/222/threads", "POST channels/111/messages/:id/threads", "POST channels/:channel/messages/:id/threads", "111", false},
		{"PUT", "channels/111/pins/222", "PUT channels/111/pins/:id", "PUT channels/:channel/pins/:id", "111", false},
		{"PUT", "channels/111/permissions/333", "PUT channels/111/permissions/:id", "PUT channels/:channel/permissions/:id", "111", false},
		{"POST", "channels/111/typing", "POST channels/111/typing", "POST channels/:channel/typing", "111", false},
		{"GET", "channels/111/threads/archived/public", "GET channels/111/threads/archived/public", "GET channels/:channel/threads/archived/public", "111", false},
		{"PUT", "channels/111/thread-members/@me", "PUT channels/111/thread-members/@me", "PUT channels/:channel/thread-members/@me", "111", false},
		{"DELETE", "channels/111/thread-members/444", "DELETE channels/111/thread-members/:id", "DELETE channels/:channel/thread-members/:id", "111", false},
		{"GET", "channels/111/polls/222/answers/1", "GET channels/111/polls/:id/answers/:id", "GET channels/:channel/polls/:id/answers/:id", "111", false},
		{"POST", "channels/111/webhooks", "POST channels/111/webhooks", "POST channels/:channel/webhooks", "111", false},

		// Reactions: per channel, method and shape; emoji and user dropped.
		{"PUT", "channels/111/messages/222/reactions/%F0%9F%91%8D/@me", "PUT channels/111/messages/:id/reactions/:emoji/@me", "PUT channels/:channel/messages/:id/reactions/:emoji/@me", "111", false},
		{"PUT", "channels/111/messages/999/reactions/name:123456/@me", "PUT channels/111/messages/:id/reactions/:emoji/@me", "PUT channels/:channel/messages/:id/reactions/:emoji/@me", "111", false},
		{"DELETE", "channels/111/messages/222/reactions/%F0%9F%91%8D/@me", "DELETE channels/111/messages/:id/reactions/:emoji/@me", "DELETE channels/:channel/messages/:id/reactions/:emoji/@me", "111", false},
		{"DELETE", "channels/111/messages/222/reactions/x/444", "DELETE channels/111/messages/:id/reactions/:emoji/:user", "DELETE channels/:channel/messages/:id/reactions/:emoji/:user", "111", false},
		{"DELETE", "channels/111/messages/222/reactions/x", "DELETE channels/111/messages/:id/reactions/:emoji", "DELETE channels/:channel/messages/:id/reactions/:emoji", "111", false},
		{"GET", "channels/111/messages/222/reactions/x?after=5&limit=100", "GET channels/111/messages/:id/reactions/:emoji", "GET channels/:channel/messages/:id/reactions/:emoji", "111", false},
		{"DELETE", "channels/111/messages/222/reactions", "DELETE channels/111/messages/:id/reactions", "DELETE channels/:channel/messages/:id/reactions", "111", false},

		// Guilds.
		{"GET", "guilds/555", "GET guilds/555", "GET guilds/:guild", "555", false},
		{"GET", "guilds/555/members/666", "GET guilds/555/members/:id", "GET guilds/:guild/members/:id", "555", false},
		{"PATCH", "guilds/555/members/@me", "PATCH guilds/555/members/@me", "PATCH guilds/:guild/members/@me", "555", false},
		{"GET", "guilds/555/members/search?query=a", "GET guilds/555/members/search", "GET guilds/:guild/members/search", "555", false},
		{"PUT", "guilds/555/members/666/roles/777", "PUT guilds/555/members/:id/roles/:id", "PUT guilds/:guild/members/:id/roles/:id", "555", false},
		{"PUT", "guilds/555/bans/666", "PUT guilds/555/bans/:id", "PUT guilds/:guild/bans/:id", "555", false},
		{"GET", "guilds/555/audit-logs?limit=1", "GET guilds/555/audit-logs", "GET guilds/:guild/audit-logs", "555", false},
		{"PATCH", "guilds/555/emojis/888", "PATCH guilds/555/emojis/:id", "PATCH guilds/:guild/emojis/:id", "555", false},
		{"GET", "guilds/555/scheduled-events/888/users", "GET guilds/555/scheduled-events/:id/users", "GET guilds/:guild/scheduled-events/:id/users", "555", false},
		{"PATCH", "guilds/555/templates/hgM48av5Q69A", "PATCH guilds/555/templates/:code", "PATCH guilds/:guild/templates/:code", "555", false},
		{"GET", "guilds/templates/hgM48av5Q69A", "GET guilds/templates/:code", "GET guilds/templates/:code", "", false},
		{"GET", "guilds/555/widget.png", "GET guilds/555/widget.png", "GET guilds/:guild/widget.png", "555", false},

		// Webhooks: the id, and the token when the route has one.
		{"GET", "webhooks/777", "GET webhooks/777", "GET webhooks/:webhook", "777", false},
		{"DELETE", "webhooks/777", "DELETE webhooks/777", "DELETE webhooks/:webhook", "777", false},
		{"POST", "webhooks/777/" + tok, "POST webhooks/777/" + tok, "POST webhooks/:webhook/:token", "777/" + tok, true},
		{"POST", "webhooks/777/" + tok + "?wait=true", "POST webhooks/777/" + tok, "POST webhooks/:webhook/:token", "777/" + tok, true},
		{"PATCH", "webhooks/777/" + tok + "/messages/@original", "PATCH webhooks/777/" + tok + "/messages/@original", "PATCH webhooks/:webhook/:token/messages/@original", "777/" + tok, true},
		{"PATCH", "webhooks/777/" + tok + "/messages/999", "PATCH webhooks/777/" + tok + "/messages/:id", "PATCH webhooks/:webhook/:token/messages/:id", "777/" + tok, true},
		{"POST", "webhooks/777/" + tok + "/slack", "POST webhooks/777/" + tok + "/slack", "POST webhooks/:webhook/:token/slack", "777/" + tok, true},

		// Interactions: id and token.
		{"POST", "/api/v10/interactions/999/" + tok + "/callback", "POST interactions/999/" + tok + "/callback", "POST interactions/:interaction/:token/callback", "999/" + tok, true},
		{"POST", "interactions/999/" + tok + "/callback?with_response=true", "POST interactions/999/" + tok + "/callback", "POST interactions/:interaction/:token/callback", "999/" + tok, true},

		// Routes without a major parameter.
		{"GET", "users/@me", "GET users/@me", "GET users/@me", "", false},
		{"GET", "users/123", "GET users/:id", "GET users/:id", "", false},
		{"POST", "users/@me/channels", "POST users/@me/channels", "POST users/@me/channels", "", false},
		{"DELETE", "users/@me/guilds/555", "DELETE users/@me/guilds/:id", "DELETE users/@me/guilds/:id", "", false},
		{"GET", "applications/@me", "GET applications/@me", "GET applications/@me", "", false},
		{"GET", "oauth2/applications/@me", "GET oauth2/applications/@me", "GET oauth2/applications/@me", "", false},
		{"PUT", "applications/123/commands", "PUT applications/:id/commands", "PUT applications/:id/commands", "", false},
		{"DELETE", "applications/123/commands/456", "DELETE applications/:id/commands/:id", "DELETE applications/:id/commands/:id", "", false},
		{"PUT", "applications/123/guilds/555/commands", "PUT applications/:id/guilds/:id/commands", "PUT applications/:id/guilds/:id/commands", "", false},
		{"GET", "applications/123/guilds/555/commands/permissions", "GET applications/:id/guilds/:id/commands/permissions", "GET applications/:id/guilds/:id/commands/permissions", "", false},
		{"POST", "applications/123/entitlements/456/consume", "POST applications/:id/entitlements/:id/consume", "POST applications/:id/entitlements/:id/consume", "", false},
		{"GET", "invites/discord-developers?with_counts=true", "GET invites/:code", "GET invites/:code", "", false},
		{"GET", "stickers/123", "GET stickers/:id", "GET stickers/:id", "", false},
		{"GET", "sticker-packs", "GET sticker-packs", "GET sticker-packs", "", false},
		{"POST", "stage-instances", "POST stage-instances", "POST stage-instances", "", false},
		{"GET", "stage-instances/111", "GET stage-instances/:id", "GET stage-instances/:id", "", false},
		{"GET", "voice/regions", "GET voice/regions", "GET voice/regions", "", false},
		{"GET", "channels/not-an-id", "GET channels/not-an-id", "GET channels/not-an-id", "", false},
		{"GET", "interactions/999", "GET interactions/:id", "GET interactions/:id", "", false},
	} {
		tc.key = strings.ReplaceAll(tc.key, tok, tokenDigest(tok))
		tc.major = strings.ReplaceAll(tc.major, tok, tokenDigest(tok))
		key := RouteKey(tc.method, tc.path)
		if strings.Contains(key, tok) {
			t.Errorf("RouteKey(%q, %q) = %q: the token is in the key", tc.method, tc.path, key)
		}
		if key != tc.key {
			t.Errorf("RouteKey(%q, %q) = %q, want %q", tc.method, tc.path, key, tc.key)
			continue
		}
		if got := Route(key); got != tc.route {
			t.Errorf("Route(%q) = %q, want %q", key, got, tc.route)
		}
		if got := Major(key); got != tc.major {
			t.Errorf("Major(%q) = %q, want %q", key, got, tc.major)
		}
		if got := OutsideGlobal(key); got != tc.outside {
			t.Errorf("OutsideGlobal(%q) = %v, want %v", key, got, tc.outside)
		}
		if again := RouteKey(tc.method, key[len(tc.method)+1:]); again != key {
			t.Errorf("RouteKey of its own key %q = %q", key, again)
		}
		if err := CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q): %v", key, err)
		}
	}
}

// TestCheckKeyRefuses what RouteKey does not make: the REST limits
// service takes keys from other machines, and a raw token must not pass.
func TestCheckKeyRefuses(t *testing.T) {
	for _, key := range []string{
		"", "GET", "GETgateway/bot", " gateway/bot", "get gateway/bot", "G3T gateway/bot",
		"GET /gateway/bot", "GET gateway/bot/", "GET gateway/bot?x=1", "GET api/v10/gateway/bot",
		"POST channels/1/messages/2", "POST webhooks/1/raw-token", "POST interactions/1/raw-token/callback",
		"GET gate way", "GET gate\x00way", "GET " + strings.Repeat("a", MaxKey),
		"PUT channels/1/messages/:id/reactions/%F0%9F%91%8D/@me",
	} {
		if err := CheckKey(key); err == nil {
			t.Errorf("CheckKey(%q) accepted", key)
		} else if strings.Contains(err.Error(), "raw-token") {
			t.Errorf("CheckKey(%q): %v quotes the key", key, err)
		}
	}
}

// TestRouteKeySameBucket: requests that must share a key do, and those that
// must not do not.
func TestRouteKeySameBucket(t *testing.T) {
	for _, tc := range []struct {
		a, b [2]string
		same bool
	}{
		{[2]string{"POST", "channels/1/messages"}, [2]string{"POST", "/api/v10/channels/1/messages"}, true},
		{[2]string{"POST", "channels/1/messages"}, [2]string{"POST", "channels/2/messages"}, false},
		{[2]string{"POST", "channels/1/messages"}, [2]string{"GET", "channels/1/messages"}, false},
		{[2]string{"PATCH", "channels/1/messages/10"}, [2]string{"PATCH", "channels/1/messages/11"}, true},
		{[2]string{"PUT", "channels/1/messages/10/reactions/a/@me"}, [2]string{"PUT", "channels/1/messages/11/reactions/b/@me"}, true},
		{[2]string{"PUT", "guilds/5/members/6/roles/7"}, [2]string{"PUT", "guilds/5/members/8/roles/9"}, true},
		{[2]string{"PUT", "guilds/5/members/6/roles/7"}, [2]string{"PUT", "guilds/6/members/6/roles/7"}, false},
		{[2]string{"POST", "webhooks/1/tokenA"}, [2]string{"POST", "webhooks/1/tokenB"}, false},
		{[2]string{"POST", "interactions/1/t/callback"}, [2]string{"POST", "interactions/2/t/callback"}, false},
	} {
		ka, kb := RouteKey(tc.a[0], tc.a[1]), RouteKey(tc.b[0], tc.b[1])
		if (ka == kb) != tc.same {
			t.Errorf("%v → %q, %v → %q: same %v, want %v", tc.a, ka, tc.b, kb, ka == kb, tc.same)
		}
	}
}

func TestParseHeaders(t *testing.T) {
	h := func(kv ...string) map[string][]string {
		m := map[string][]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = []string{kv[i+1]}
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		status int
		h      map[string][]string
		want   Response
	}{
		{"bucket", 200, h("X-Ratelimit-Limit", "5", "X-Ratelimit-Remaining", "4", "X-Ratelimit-Reset-After", "4.9991", "X-Ratelimit-Bucket", "abcd", "X-Ratelimit-Reset", "1470173023.123"),
			Response{Status: 200, Bucket: "abcd", Limit: 5, Remaining: 4, ResetAfter: 5000 * 1e6}},
		{"none", 204, h(), Response{Status: 204}},
		{"user 429", 429, h("X-Ratelimit-Limit", "5", "X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset-After", "1.5", "X-Ratelimit-Bucket", "abcd", "Retry-After", "2", "X-Ratelimit-Scope", "user"),
			Response{Status: 429, Bucket: "abcd", Limit: 5, ResetAfter: 1500 * 1e6, Scope: ScopeUser, RetryAfter: 2e9}},
		{"global 429", 429, h("Retry-After", "65", "X-Ratelimit-Global", "true", "X-Ratelimit-Scope", "global"),
			Response{Status: 429, Global: true, Scope: ScopeGlobal, RetryAfter: 65e9}},
		{"shared 429", 429, h("X-Ratelimit-Limit", "1", "X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset-After", "0.250", "X-Ratelimit-Bucket", "r", "Retry-After", "1", "X-Ratelimit-Scope", "shared"),
			Response{Status: 429, Bucket: "r", Limit: 1, ResetAfter: 250 * 1e6, Scope: ScopeShared, RetryAfter: 1e9}},
		{"malformed", 200, h("X-Ratelimit-Limit", "x", "X-Ratelimit-Remaining", "4", "Retry-After", "-3"), Response{Status: 200}},
		{"cloudflare", 429, h("Retry-After", "3600"), Response{Status: 429, RetryAfter: 3600e9}},
	} {
		if got := ParseHeaders(tc.status, tc.h); got != tc.want {
			t.Errorf("%s: ParseHeaders = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		r       Response
		invalid bool
		scope   string
	}{
		{Response{Status: 401}, true, ""},
		{Response{Status: 403}, true, ""},
		{Response{Status: 404}, false, ""},
		{Response{Status: 429, Scope: ScopeUser, Limit: 1}, true, ScopeUser},
		{Response{Status: 429, Limit: 1}, true, ScopeUser},
		{Response{Status: 429, Global: true}, true, ScopeGlobal},
		{Response{Status: 429, Scope: ScopeShared, Limit: 1}, false, ScopeShared},
		{Response{Status: 429}, true, "unknown"},
	} {
		if got := tc.r.invalid(); got != tc.invalid {
			t.Errorf("%+v invalid = %v, want %v", tc.r, got, tc.invalid)
		}
		if tc.scope != "" {
			if got := tc.r.scope429(); got != tc.scope {
				t.Errorf("%+v scope = %q, want %q", tc.r, got, tc.scope)
			}
		}
	}
}
