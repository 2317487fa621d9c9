package discordtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"
)

// The control API: JSON over HTTP for driving the fake from another
// process. Errors are {"error": "..."} with status 400 (bad request), 404
// (no such route), 405 (wrong method), 409 (interact: no session of the
// shard) or 504 (interact: no reply in time). Routes are listed in the
// package documentation.

// maxInteractTimeout bounds how long POST /interact waits.
const maxInteractTimeout = 5 * time.Minute

// ControlHandler returns the control API handler, with routes at its root
// ("/record", "/disconnect", ...). NewServer also serves it under
// ControlPrefix on the fake's own listener.
func (s *Server) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	handle := func(method, path string, h func(w http.ResponseWriter, r *http.Request)) {
		mux.HandleFunc(method+" "+path, h)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			controlError(w, http.StatusMethodNotAllowed, fmt.Errorf("%s %s: method not allowed, use %s", r.Method, path, method))
		})
	}
	handle("GET", "/record", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Record())
	})
	handle("GET", "/guilds", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"guild_ids": s.GuildIDs()})
	})
	handle("GET", "/bucket", func(w http.ResponseWriter, r *http.Request) {
		route := r.URL.Query().Get("route")
		st, ok := s.Bucket(route, r.URL.Query().Get("major"))
		if !ok {
			controlError(w, http.StatusNotFound, fmt.Errorf("bucket: unknown route %q (a pattern such as \"POST channels/{channel}/messages\")", route))
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	handle("POST", "/interact", s.controlInteract)
	handle("POST", "/disconnect", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *int `json:"shard"`
			Code  int  `json:"code"`
		}
		if !controlDecode(w, r, &req) || !needShard(w, req.Shard, true) {
			return
		}
		if req.Code != 0 && !validCloseCode(req.Code) {
			controlError(w, http.StatusBadRequest, fmt.Errorf("disconnect: close code %d cannot be sent; use 0 (drop), 1000-1003, 1007-1014 or 3000-4999", req.Code))
			return
		}
		acted(w, s.Disconnect(*req.Shard, req.Code))
	})
	handle("POST", "/zombie", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *int  `json:"shard"`
			On    *bool `json:"on"`
		}
		if !controlDecode(w, r, &req) || !needShard(w, req.Shard, false) {
			return
		}
		if req.On == nil {
			controlError(w, http.StatusBadRequest, errors.New(`zombie: "on" (true or false) is required`))
			return
		}
		s.Zombie(*req.Shard, *req.On)
		writeJSON(w, http.StatusOK, map[string]any{"shard": *req.Shard, "on": *req.On})
	})
	handle("POST", "/reconnect", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *int `json:"shard"`
		}
		if controlDecode(w, r, &req) && needShard(w, req.Shard, true) {
			acted(w, s.Reconnect(*req.Shard))
		}
	})
	handle("POST", "/reconnect-instead-of-ready", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *int `json:"shard"`
		}
		if controlDecode(w, r, &req) && needShard(w, req.Shard, false) {
			s.ReconnectInsteadOfReady(*req.Shard)
			writeJSON(w, http.StatusOK, map[string]any{"shard": *req.Shard})
		}
	})
	handle("POST", "/invalid-session", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard     *int `json:"shard"`
			Resumable bool `json:"resumable"`
		}
		if controlDecode(w, r, &req) && needShard(w, req.Shard, true) {
			acted(w, s.InvalidSession(*req.Shard, req.Resumable))
		}
	})
	handle("POST", "/invalid-session-during-guilds", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *int `json:"shard"`
			After int  `json:"after"`
		}
		if !controlDecode(w, r, &req) || !needShard(w, req.Shard, false) {
			return
		}
		if req.After < 0 {
			controlError(w, http.StatusBadRequest, fmt.Errorf(`invalid-session-during-guilds: "after" must be >= 0, got %d`, req.After))
			return
		}
		s.InvalidSessionDuringGuilds(*req.Shard, req.After)
		writeJSON(w, http.StatusOK, map[string]any{"shard": *req.Shard, "after": req.After})
	})
	handle("POST", "/malformed", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *int      `json:"shard"`
			Kind  Malformed `json:"kind"`
		}
		if !controlDecode(w, r, &req) || !needShard(w, req.Shard, true) {
			return
		}
		if !req.Kind.Valid() {
			controlError(w, http.StatusBadRequest, fmt.Errorf("malformed: unknown kind %q; use json, unknown_op, oversized or binary", req.Kind))
			return
		}
		acted(w, s.SendMalformed(*req.Shard, req.Kind))
	})
	handle("POST", "/hello-delay", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Delay string `json:"delay"`
		}
		if !controlDecode(w, r, &req) {
			return
		}
		d, err := time.ParseDuration(req.Delay)
		if err != nil || d < 0 {
			controlError(w, http.StatusBadRequest, fmt.Errorf(`hello-delay: "delay" must be a non-negative duration such as "1.5s", got %q`, req.Delay))
			return
		}
		s.SetHelloDelay(d)
		writeJSON(w, http.StatusOK, map[string]any{"delay": d.String()})
	})
	handle("POST", "/fail-rest", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Status int `json:"status"`
			N      int `json:"n"`
		}
		if !controlDecode(w, r, &req) {
			return
		}
		if req.Status < 400 || req.Status > 599 || req.N < 0 {
			controlError(w, http.StatusBadRequest, fmt.Errorf("fail-rest: status must be 400-599 and n >= 0, got status %d, n %d", req.Status, req.N))
			return
		}
		s.FailREST(req.Status, req.N)
		writeJSON(w, http.StatusOK, map[string]any{"status": req.Status, "n": req.N})
	})
	handle("POST", "/event-rate", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Rate *float64 `json:"per_shard_per_second"`
		}
		if !controlDecode(w, r, &req) {
			return
		}
		if req.Rate == nil || *req.Rate < 0 || math.IsInf(*req.Rate, 0) {
			controlError(w, http.StatusBadRequest, errors.New(`event-rate: "per_shard_per_second" must be a number >= 0`))
			return
		}
		s.SetEventRate(*req.Rate)
		writeJSON(w, http.StatusOK, map[string]any{"per_shard_per_second": *req.Rate})
	})
	handle("POST", "/add-guilds", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			N int `json:"n"`
		}
		if !controlDecode(w, r, &req) {
			return
		}
		ids, err := s.AddGuilds(req.N)
		if err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"guild_ids": ids, "guilds": s.guildTotal()})
	})
	handle("POST", "/recommended-shards", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shards int `json:"shards"`
		}
		if !controlDecode(w, r, &req) {
			return
		}
		if err := s.SetRecommendedShards(req.Shards); err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"shards": req.Shards})
	})
	handle("GET", "/live-sessions", func(w http.ResponseWriter, r *http.Request) {
		ls, err := s.LiveSessionsOf(r.URL.Query().Get("guild_id"))
		if err != nil {
			controlError(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sessions": ls})
	})
	handle("GET", "/uncovered", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		from, err := time.Parse(time.RFC3339Nano, q.Get("from"))
		if err != nil {
			controlError(w, http.StatusBadRequest, fmt.Errorf(`uncovered: "from" must be an RFC 3339 time: %w`, err))
			return
		}
		var to time.Time
		if v := q.Get("to"); v != "" {
			if to, err = time.Parse(time.RFC3339Nano, v); err != nil {
				controlError(w, http.StatusBadRequest, fmt.Errorf(`uncovered: "to" must be an RFC 3339 time: %w`, err))
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"gaps": s.Uncovered(from, to)})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		controlError(w, http.StatusNotFound, fmt.Errorf("no control route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (s *Server) controlInteract(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Interaction
		Timeout string `json:"timeout"`
	}
	if !controlDecode(w, r, &req) {
		return
	}
	timeout := 30 * time.Second
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 || d > maxInteractTimeout {
			controlError(w, http.StatusBadRequest, fmt.Errorf(`interact: "timeout" must be a duration in (0, %v], got %q`, maxInteractTimeout, req.Timeout))
			return
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	rp, err := s.Interact(ctx, req.Interaction)
	var ns noSessionError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, rp)
	case errors.As(err, &ns):
		controlError(w, http.StatusConflict, err)
	case errors.Is(err, context.DeadlineExceeded):
		controlError(w, http.StatusGatewayTimeout, err)
	default:
		controlError(w, http.StatusBadRequest, err)
	}
}

func controlError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// controlDecode decodes exactly one JSON object with known fields.
func controlDecode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		if _, e := dec.Token(); e != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("empty body")
		}
		controlError(w, http.StatusBadRequest, fmt.Errorf("%s: request body: %w", r.URL.Path, err))
		return false
	}
	return true
}

// needShard checks a required shard field; -1 (every shard) only if any.
func needShard(w http.ResponseWriter, shard *int, all bool) bool {
	switch {
	case shard == nil:
		controlError(w, http.StatusBadRequest, errors.New(`"shard" is required`))
	case *shard < -1 || (*shard == -1 && !all):
		controlError(w, http.StatusBadRequest, fmt.Errorf(`"shard" must be >= 0%s, got %d`, map[bool]string{true: " or -1 (all)"}[all], *shard))
	default:
		return true
	}
	return false
}

func acted(w http.ResponseWriter, n int) {
	writeJSON(w, http.StatusOK, map[string]int{"connections": n})
}
