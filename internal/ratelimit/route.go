package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// tokenDigest stands for a token in a key: "t" and 16 hex digits of its
// SHA-256, distinct per token and revealing nothing of it. A digest is
// kept as it is (no token looks like one), so that RouteKey of a key is
// the key.
func tokenDigest(token string) string {
	if len(token) == 17 && token[0] == 't' {
		if _, err := hex.DecodeString(token[1:]); err == nil {
			return token
		}
	}
	sum := sha256.Sum256([]byte(token))
	return "t" + hex.EncodeToString(sum[:8])
}

// RouteKey returns the rate limit key of a REST request: its method, a
// space, and its path with the major parameter kept and every other
// variable part replaced, e.g.
//
//	RouteKey("POST", "/api/v10/channels/123/messages")      == "POST channels/123/messages"
//	RouteKey("PATCH", "channels/123/messages/456")          == "PATCH channels/123/messages/:id"
//	RouteKey("PUT", "channels/1/messages/2/reactions/%F0%9F%91%8D/@me") == "PUT channels/1/messages/:id/reactions/:emoji/@me"
//
// path is the URL path after /api/v{N}/; a leading "/", "/api/" and
// "/api/v{N}/", a scheme and host, a query and a trailing "/" are accepted
// and dropped. The method is upper-cased.
//
// The major parameter is the snowflake after a leading channels/ or
// guilds/, the webhook id after webhooks/ together with its token when the
// path has one, and the interaction id and token of interactions/. Only a
// leading one counts (applications/{app}/guilds/{guild}/commands has
// none), as in discord.js and twilight: sharing state between guilds is
// the safe side of a wrong guess. Every other all-digit segment becomes
// ":id"; the invite or template code after invites/ or templates/ becomes
// ":code".
//
// Reactions: the emoji and the user after reactions/ become ":emoji" and
// ":user" ("@me" is kept), so that every message, emoji and user of a
// channel shares one key per method and shape (reactions,
// reactions/:emoji, reactions/:emoji/@me, reactions/:emoji/:user).
// discordgo goes further and keys all of a channel's reactions alike;
// the shapes are kept apart here because Discord may bucket them apart,
// and a key that maps to two bucket hashes would flap between them.
//
// A webhook's or an interaction's token is a secret (it lets anyone post
// as the webhook, or answer the interaction): the key carries a digest of
// it instead (tokenDigest), so that keys may travel to the supervisor, be
// logged and be compared without revealing it.
//
// The key is what Ticket, Report and Cancel take; compute it once per
// request, where the request is made.
func RouteKey(method, path string) string {
	path = trimPath(path)
	var b strings.Builder
	b.Grow(len(method) + 1 + len(path) + 8)
	for i := 0; i < len(method); i++ {
		c := method[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		b.WriteByte(c)
	}
	b.WriteByte(' ')
	rest := path
	seg := func() string { // the next segment of rest
		s, r, _ := strings.Cut(rest, "/")
		rest = r
		return s
	}
	first := true
	write := func(s string) {
		if !first {
			b.WriteByte('/')
		}
		first = false
		b.WriteString(s)
	}
	nmaj := majorSegments(path)
	for i := range nmaj {
		s := seg()
		if i == 2 { // a webhook's or an interaction's token
			s = tokenDigest(s)
		}
		write(s)
	}
	prev := ""
	for rest != "" {
		s := seg()
		switch {
		case s == "reactions":
			write(s)
			if rest != "" {
				seg()
				write(":emoji")
				if rest != "" {
					if u := seg(); u == "@me" {
						write(u)
					} else {
						write(":user")
					}
				}
			}
			rest = ""
		case isID(s):
			write(":id")
		case (prev == "invites" || prev == "templates") && s != "":
			write(":code")
		default:
			write(s)
		}
		prev = s
	}
	return b.String()
}

// trimPath drops what RouteKey accepts around the path.
func trimPath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if i := strings.Index(p, "://"); i >= 0 {
		p = p[i+3:]
		if j := strings.IndexByte(p, '/'); j >= 0 {
			p = p[j:]
		} else {
			p = ""
		}
	}
	p = strings.Trim(p, "/")
	if r, ok := strings.CutPrefix(p, "api/"); ok {
		p = r
		if v, r, _ := strings.Cut(p, "/"); len(v) > 1 && v[0] == 'v' && isID(v[1:]) {
			p = r
		}
	} else if p == "api" {
		p = ""
	}
	return p
}

// majorSegments is how many leading segments of path (without the
// method) make up its major parameter, the resource name included: 2 for
// channels/{id} and guilds/{id} and a webhook without its token, 3 for
// webhooks/{id}/{token} and interactions/{id}/{token}, 0 when none.
func majorSegments(path string) int {
	res, rest, _ := strings.Cut(path, "/")
	id, rest, more := strings.Cut(rest, "/")
	if !isID(id) {
		return 0
	}
	switch res {
	case "channels", "guilds":
		return 2
	case "webhooks":
		if more && rest != "" {
			return 3
		}
		return 2
	case "interactions":
		if more && rest != "" {
			return 3
		}
	}
	return 0
}

// isID reports whether s is a snowflake (or any other number): non-empty,
// all ASCII digits.
func isID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// splitKey splits a key from RouteKey into its route (the key with the
// major parameter replaced by placeholders: ":channel", ":guild",
// ":webhook" and ":token", ":interaction" and ":token") and the major
// parameter ("" when none), and reports whether the route is outside the
// global limit.
func splitKey(key string) (route, major string, outside bool) {
	method, path, _ := strings.Cut(key, " ")
	n := majorSegments(path)
	if n == 0 {
		return key, "", false
	}
	res, rest, _ := strings.Cut(path, "/")
	id, rest, _ := strings.Cut(rest, "/")
	var b strings.Builder
	b.Grow(len(key))
	b.WriteString(method)
	b.WriteByte(' ')
	b.WriteString(res)
	switch res {
	case "channels":
		b.WriteString("/:channel")
	case "guilds":
		b.WriteString("/:guild")
	case "webhooks":
		b.WriteString("/:webhook")
	case "interactions":
		b.WriteString("/:interaction")
	}
	major = id
	if n == 3 {
		var tok string
		tok, rest, _ = strings.Cut(rest, "/")
		b.WriteString("/:token")
		major = path[len(res)+1 : len(res)+1+len(id)+1+len(tok)]
		outside = true
	}
	if rest != "" {
		b.WriteByte('/')
		b.WriteString(rest)
	}
	return b.String(), major, outside
}

// Major returns the major parameter of a key from RouteKey: the channel
// or guild id, "id/token" of a webhook with its token or of an
// interaction, the webhook id of a webhook without; "" when the route has
// none. Discord keeps a bucket's state apart per major parameter.
func Major(key string) string {
	_, m, _ := splitKey(key)
	return m
}

// Route returns the key with its major parameter replaced by a
// placeholder (Major explains which): the same for every channel, guild,
// webhook or interaction, e.g. "POST channels/:channel/messages". Metrics
// are labelled by it.
func Route(key string) string {
	r, _, _ := splitKey(key)
	return r
}

// OutsideGlobal reports whether requests of key are outside Discord's
// global limit: interaction callbacks (interactions/{id}/{token}/...) and
// routes authorized by a webhook's token (webhooks/{id}/{token}...), which
// covers interaction follow-ups.
func OutsideGlobal(key string) bool {
	_, path, _ := strings.Cut(key, " ")
	return majorSegments(path) == 3
}

// MaxKey bounds the length of a key CheckKey accepts: a method and a
// path with its major parameter (a webhook's digest is the longest, and
// Discord's longest routes stay under 150 bytes).
const MaxKey = 512

// CheckKey returns an error unless key is one RouteKey returns: at most
// MaxKey bytes, an upper-case method, a space, and a path that RouteKey
// keeps as it is (no query, no slash at either end, no byte below '!',
// every id but the major parameter replaced, a digest where a webhook's
// or an interaction's token was). A key with a token in it is refused.
// The error never quotes the key.
func CheckKey(key string) error {
	if key == "" {
		return errors.New("empty")
	}
	if len(key) > MaxKey {
		return fmt.Errorf("%d bytes, more than %d", len(key), MaxKey)
	}
	method, path, ok := strings.Cut(key, " ")
	if !ok || method == "" || len(method) > 16 {
		return errors.New("not a method, a space and a path")
	}
	for i := 0; i < len(method); i++ {
		if c := method[i]; c < 'A' || c > 'Z' {
			return errors.New("the method is not in upper-case letters")
		}
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("byte %#x in the path", c)
		}
	}
	if RouteKey(method, path) != key {
		return errors.New("not a route key: RouteKey would change it (a query, an id or a token left in, a slash at an end)")
	}
	return nil
}
