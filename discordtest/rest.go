package discordtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// REST under /api/v9 and /api/v10. Every route but GET gateway,
// interaction callbacks and webhooks needs "Authorization: Bot <token>"
// (401 otherwise); those need none but refuse a wrong one. Interaction
// callbacks and webhooks are exempt from the global rate limit, as on
// Discord. The order of checks: route (404/405), IP ban (403), injected
// failure (FailREST), authorization (401), global rate limit (429),
// per-route bucket (429), handler. Rate limits are in ratelimit.go.

type route struct {
	pattern string // method and path under /api/{v}/, e.g. "GET gateway/bot"
	open    bool   // interaction-token route: no auth needed, no global limit
	public  bool   // no auth needed (GET gateway), still rate limited
	h       func(s *Server, w http.ResponseWriter, r *http.Request)
}

func restRoutes() []route {
	return []route{
		{pattern: "GET gateway", public: true, h: (*Server).getGateway},
		{pattern: "GET gateway/bot", h: (*Server).getGatewayBot},
		{pattern: "GET users/@me", h: (*Server).getMe},
		{pattern: "GET applications/@me", h: (*Server).getApplication},
		{pattern: "GET oauth2/applications/@me", h: (*Server).getApplication},
		{pattern: "GET applications/{app}/commands", h: (*Server).listCommands},
		{pattern: "PUT applications/{app}/commands", h: (*Server).putCommands},
		{pattern: "POST applications/{app}/commands", h: (*Server).postCommand},
		{pattern: "DELETE applications/{app}/commands/{cmd}", h: (*Server).deleteCommand},
		{pattern: "GET applications/{app}/guilds/{guild}/commands", h: (*Server).listCommands},
		{pattern: "PUT applications/{app}/guilds/{guild}/commands", h: (*Server).putCommands},
		{pattern: "POST applications/{app}/guilds/{guild}/commands", h: (*Server).postCommand},
		{pattern: "DELETE applications/{app}/guilds/{guild}/commands/{cmd}", h: (*Server).deleteCommand},
		{pattern: "POST channels/{channel}/messages", h: (*Server).postMessage},
		{pattern: "POST interactions/{id}/{token}/callback", open: true, h: (*Server).interactionCallback},
		{pattern: "POST webhooks/{app}/{token}", open: true, h: (*Server).followup},
		{pattern: "PATCH webhooks/{app}/{token}/messages/{msg}", open: true, h: (*Server).editReply},
		{pattern: "GET webhooks/{app}/{token}/messages/{msg}", open: true, h: (*Server).getReply},
		{pattern: "DELETE webhooks/{app}/{token}/messages/{msg}", open: true, h: (*Server).deleteReply},
	}
}

// restHandler serves /api/.
func (s *Server) restHandler() http.Handler {
	mux := http.NewServeMux()
	paths := map[string]bool{}
	for _, rt := range restRoutes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		mux.Handle(method+" /api/{v}/"+path, s.restRoute(rt))
		if !paths[path] {
			paths[path] = true
			mux.Handle("/api/{v}/"+path, s.counted("unknown", func(w http.ResponseWriter, _ *http.Request) int {
				writeError(w, http.StatusMethodNotAllowed, 0, "405: Method Not Allowed")
				return http.StatusMethodNotAllowed
			}))
		}
	}
	mux.Handle("/", s.counted("unknown", func(w http.ResponseWriter, _ *http.Request) int {
		writeError(w, http.StatusNotFound, 0, "404: Not Found")
		return http.StatusNotFound
	}))
	return mux
}

// counted refuses requests from a banned IP, records the status of each
// request on route, and counts invalid requests toward the IP's ban.
func (s *Server) counted(route string, h func(w http.ResponseWriter, r *http.Request) int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := clientIP(r)
		if _, banned := s.lim.bannedUntil(ip, time.Now()); banned {
			writeBanned(w)
			s.rec.restCall(route, http.StatusForbidden, false)
			return
		}
		status := h(w, r)
		invalid := countsInvalid(status, w.Header().Get("X-RateLimit-Scope"))
		s.rec.restCall(route, status, invalid)
		if !invalid {
			return
		}
		now := time.Now()
		if n, until := s.lim.invalid(ip, now); !until.IsZero() {
			s.log.Warn("discordtest: too many invalid requests, ip banned", "ip", ip, "invalid", n, "until", until)
			s.rec.ban(BanRecord{IP: ip, At: now, Until: until, Invalid: n})
		}
	})
}

func (s *Server) restRoute(rt route) http.Handler {
	pol := s.lim.routes[rt.pattern]
	return s.counted(rt.pattern, func(w http.ResponseWriter, r *http.Request) int {
		if v := r.PathValue("v"); v != "v9" && v != "v10" {
			writeError(w, http.StatusNotFound, 0, "404: Not Found")
			return http.StatusNotFound
		}
		if st, ok := s.injectedFailure(w, rt.pattern); ok {
			return st
		}
		auth := r.Header.Get("Authorization")
		s.mu.Lock()
		revoked := s.revoked
		s.mu.Unlock()
		if (auth != "" || !(rt.open || rt.public)) && (revoked || auth != "Bot "+s.opts.Token) {
			writeError(w, http.StatusUnauthorized, 0, "401: Unauthorized")
			return http.StatusUnauthorized
		}
		now := time.Now()
		if !rt.open {
			who := auth // the bot token, or the IP of a request without one
			if who == "" {
				who = "ip " + clientIP(r)
			}
			if v := s.lim.allowGlobal(who, now); !v.ok {
				s.rateLimited(w, v, rt.pattern, "", now)
				return http.StatusTooManyRequests
			}
		}
		major := pol.majorOf(r)
		v := s.lim.allowRoute(pol, major, now)
		setBucketHeaders(w.Header(), v, now)
		if !v.ok {
			s.rateLimited(w, v, rt.pattern, major, now)
			return http.StatusTooManyRequests
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rt.h(s, sw, r)
		return sw.status
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// rateLimited answers 429 for v and records it.
func (s *Server) rateLimited(w http.ResponseWriter, v verdict, route, major string, now time.Time) {
	after := writeRateLimited(w, v, now)
	s.rec.rateLimited(RateLimitRecord{At: now, Route: route, Bucket: v.hash, Major: major, Scope: v.scope, RetryAfter: after})
}

// injectedFailure answers a request on route failed by FailREST.
func (s *Server) injectedFailure(w http.ResponseWriter, route string) (int, bool) {
	s.mu.Lock()
	status := 0
	if s.failLeft > 0 {
		status = s.failStatus
		s.failLeft--
	}
	s.mu.Unlock()
	switch status {
	case 0:
		return 0, false
	case http.StatusTooManyRequests:
		h := w.Header()
		h.Set("Retry-After", "1")
		h.Set("X-RateLimit-Limit", "5")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset-After", "0.250")
		h.Set("X-RateLimit-Reset", unixSeconds(time.Now().Add(250*time.Millisecond)))
		h.Set("X-RateLimit-Bucket", "discordtest-injected")
		h.Set("X-RateLimit-Scope", ScopeUser)
		writeJSON(w, status, map[string]any{"message": "You are being rate limited.", "retry_after": 0.25, "global": false})
		s.rec.rateLimited(RateLimitRecord{
			At: time.Now(), Route: route, Bucket: "discordtest-injected", Scope: ScopeUser,
			RetryAfter: 250 * time.Millisecond, Injected: true,
		})
	default:
		writeError(w, status, 0, fmt.Sprintf("%d: %s", status, http.StatusText(status)))
	}
	return status, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"500: Internal Server Error","code":0}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// writeError writes Discord's error body {"message": ..., "code": ...}.
func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg, "code": code})
}

// formError writes Discord's 400 "Invalid Form Body" with one error at path.
func formError(w http.ResponseWriter, path, code, msg string) {
	var errs any = map[string]any{"_errors": []map[string]string{{"code": code, "message": msg}}}
	parts := strings.Split(path, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		errs = map[string]any{parts[i]: errs}
	}
	writeJSON(w, http.StatusBadRequest, map[string]any{"code": 50035, "message": "Invalid Form Body", "errors": errs})
}

// decodeBody decodes a JSON request body of at most 1 MiB into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
		return false
	}
	return true
}

func (s *Server) getGateway(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"url": s.wsURL})
}

func (s *Server) getGatewayBot(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	resetAfter := s.resetAfterLocked(time.Now()) // refills a window that ran out: read remaining after it
	left := s.startsLeft
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"url":    s.wsURL,
		"shards": s.RecommendedShards(),
		"session_start_limit": map[string]int64{
			"total":           int64(s.opts.SessionStartLimit),
			"remaining":       int64(left),
			"reset_after":     resetAfter.Milliseconds(),
			"max_concurrency": int64(s.opts.MaxConcurrency),
		},
	})
}

func (s *Server) getMe(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.selfUser())
}

// getApplication is the current application (GET applications/@me, and
// its older form under oauth2/), which a bot reads for its id before it
// registers commands. Its owner is generated user 0, who owns every guild;
// there is no team.
func (s *Server) getApplication(w http.ResponseWriter, _ *http.Request) {
	u := s.botUser()
	owner := genUser(0)
	writeJSON(w, http.StatusOK, map[string]any{
		"id": s.opts.ApplicationID, "name": u.Username, "icon": nil, "description": "a fake Discord's application",
		"summary": "", "type": nil, "bot_public": true, "bot_require_code_grant": false,
		"verify_key": strings.Repeat("0", 64), "team": nil, "flags": s.applicationFlags(), "bot": u,
		"owner": map[string]any{"id": owner.ID, "username": owner.Username, "discriminator": owner.Discriminator,
			"global_name": owner.GlobalName, "avatar": nil, "flags": 0, "public_flags": 0},
		"rpc_origins": []string{}, "redirect_uris": []string{}, "interactions_endpoint_url": nil,
		"role_connections_verification_url": nil, "tags": []string{},
		"approximate_guild_count": s.guildTotal(), "approximate_user_install_count": 0,
		"integration_types_config": map[string]any{"0": map[string]any{}},
	})
}

// messageJSON is a message object as REST returns it.
func (s *Server) messageJSON(id, channel, content string, flags int) map[string]any {
	return map[string]any{
		"id": id, "type": 0, "content": content, "channel_id": channel, "author": s.botUser(),
		"timestamp": time.Now().UTC().Format(time.RFC3339Nano), "edited_timestamp": nil, "tts": false,
		"mention_everyone": false, "mentions": []any{}, "mention_roles": []any{}, "attachments": []any{},
		"embeds": []any{}, "pinned": false, "flags": flags, "components": []any{},
	}
}

// postMessage accepts a message in any channel, so that bots can answer
// MESSAGE_CREATE in benchmarks.
func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Content string `json:"content"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	writeJSON(w, http.StatusOK, s.messageJSON(s.ids.next(), r.PathValue("channel"), body.Content, 0))
}
