package discordtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Interaction is a slash command (interaction type 2, command type 1) to
// inject with Interact.
type Interaction struct {
	GuildID   string   `json:"guild_id"`   // "" = a DM: routed to shard 0, with user instead of member
	ChannelID string   `json:"channel_id"` // default: the guild's first channel (a DM channel for DMs)
	UserID    string   `json:"user_id"`    // the invoking user; default generated user 1
	Command   string   `json:"command"`    // command name, required
	Options   []Option `json:"options"`
}

// Option is one command option. Type 0 is inferred from Value: string → 3
// (STRING), bool → 5 (BOOLEAN), an integral number → 4 (INTEGER), another
// number → 10 (NUMBER).
type Option struct {
	Name  string `json:"name"`
	Type  int    `json:"type,omitempty"`
	Value any    `json:"value"`
}

// Reply is one answer of the bot to an interaction.
type Reply struct {
	Via     string        `json:"via"`  // "callback", "followup" or "edit" (PATCH of a message)
	Type    int           `json:"type"` // callback type; 0 for follow-ups and edits
	Content string        `json:"content"`
	At      time.Time     `json:"at"`
	Latency time.Duration `json:"latency_ns"` // since the INTERACTION_CREATE was queued
	Status  int           `json:"status"`     // what the fake answered, e.g. 204, or 400 for a second callback
}

type pendingInteraction struct {
	id, token, guild, channel, message string
	sentAt                             time.Time
	acked                              bool // an initial response was accepted
	content                            string
	completed                          bool
	reply                              Reply
	done                               chan struct{} // closed when completed
}

// noSessionError: Interact found no session of the routed shard.
type noSessionError struct{ shard int }

func (e noSessionError) Error() string {
	return fmt.Sprintf("interact: no session of shard %d to dispatch to", e.shard)
}

// Interact dispatches an INTERACTION_CREATE to every session of the routed
// shard ((guild_id >> 22) % count for each session's count; shard 0 for a
// DM) that has not ended — live sessions get it now, detached resumable
// ones on RESUME — and waits for the bot's reply: the first accepted
// callback of type 4 (message) or 9 (modal), or the first follow-up or edit
// of the original message (so a deferred type 5 callback waits for its
// edit). It returns that reply, or ctx's error, or an error at once when no
// session of the shard exists. Every reply, accepted or not, is recorded.
func (s *Server) Interact(ctx context.Context, in Interaction) (Reply, error) {
	if in.Command == "" {
		return Reply{}, errors.New("interact: command is empty")
	}
	opts, err := optionsJSON(in.Options)
	if err != nil {
		return Reply{}, fmt.Errorf("interact: %w", err)
	}
	k, shard := -1, 0
	if in.GuildID != "" {
		var ok bool
		if k, ok = guildIndex(in.GuildID, s.guildTotal()); !ok {
			return Reply{}, fmt.Errorf("interact: unknown guild %q", in.GuildID)
		}
		shard = routeShard(guildID(k), s.RecommendedShards())
	}
	user := genUser(1)
	if in.UserID != "" {
		if _, err := strconv.ParseUint(in.UserID, 10, 64); err != nil {
			return Reply{}, fmt.Errorf("interact: user id %q is not a snowflake", in.UserID)
		}
		user.ID = in.UserID
	}
	channel := in.ChannelID
	if channel == "" {
		if k >= 0 {
			channel = strconv.FormatUint(channelID(k, 0), 10)
		} else {
			channel = s.ids.next()
		}
	}
	p := &pendingInteraction{
		id: s.ids.next(), token: "aW50ZXJhY3Rpb246" + randomToken() + randomToken(),
		guild: in.GuildID, channel: channel, message: s.ids.next(), done: make(chan struct{}),
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Reply{}, errors.New("interact: server closed")
	}
	cmdID, guildCmd := s.commandIDLocked(in.GuildID, in.Command)
	if cmdID == "" {
		cmdID = s.ids.next() // not registered: taken for a global command
	}
	var targets []*session
	var ids []string
	for _, ss := range s.sessions {
		if ss.ended {
			continue
		}
		if (k < 0 && ss.shard == 0) || (k >= 0 && routeShard(guildID(k), ss.count) == ss.shard) {
			targets = append(targets, ss)
			ids = append(ids, ss.id)
		}
	}
	if len(targets) == 0 {
		s.mu.Unlock()
		return Reply{}, noSessionError{shard}
	}
	// Dispatch while holding s.mu: once the record shows the interaction,
	// every target has it queued (or kept for replay).
	d := s.interactionPayload(p, in, k, user, cmdID, guildCmd, opts)
	p.sentAt = time.Now()
	s.pending[p.id] = p
	s.rec.interaction(InteractionRecord{ID: p.id, GuildID: in.GuildID, Shard: shard, Command: in.Command,
		SentAt: p.sentAt, Sessions: ids, Replies: []Reply{}})
	for _, ss := range targets {
		ss.dispatch("INTERACTION_CREATE", d)
	}
	s.mu.Unlock()

	select {
	case <-p.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return p.reply, nil
	case <-ctx.Done():
		return Reply{}, fmt.Errorf("interact %s: waiting for a reply: %w", in.Command, ctx.Err())
	case <-s.done:
		return Reply{}, fmt.Errorf("interact %s: server closed", in.Command)
	}
}

func optionsJSON(in []Option) ([]map[string]any, error) {
	out := make([]map[string]any, 0, len(in))
	for _, o := range in {
		if o.Name == "" {
			return nil, errors.New("option without a name")
		}
		t := o.Type
		if t == 0 {
			switch v := o.Value.(type) {
			case string:
				t = 3
			case bool:
				t = 5
			case int, int32, int64:
				t = 4
			case float64:
				if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
					t = 4
				} else {
					t = 10
				}
			default:
				return nil, fmt.Errorf("option %q: value of type %T: want string, bool or number", o.Name, o.Value)
			}
		}
		out = append(out, map[string]any{"name": o.Name, "type": t, "value": o.Value})
	}
	return out, nil
}

// attachmentSizeLimit is attachment_size_limit: 10 MiB, the limit of a
// guild without boosts and of DMs.
const attachmentSizeLimit = 10 << 20

// interactionPayload is INTERACTION_CREATE's d for a slash command in guild
// k (-1: a DM with the bot). Ids are strings, and so are app_permissions
// and member.permissions (numbers break discordgo). data.guild_id is there
// only for a command registered in the guild, as on Discord: a client
// takes a global command carrying it for an unknown guild command.
// authorizing_integration_owners has the guild install only ({"0": guild
// id}, or "0" in a DM with the bot): the fake's application is installed
// to guilds, not to users.
func (s *Server) interactionPayload(p *pendingInteraction, in Interaction, k int, user userJSON, cmdID string, guildCmd bool, opts []map[string]any) []byte {
	data := map[string]any{"id": cmdID, "name": in.Command, "type": 1, "options": opts}
	d := map[string]any{
		"id": p.id, "application_id": s.opts.ApplicationID, "type": 2, "token": p.token, "version": 1,
		"channel_id": p.channel, "locale": "en-US", "app_permissions": everyonePermissions,
		"entitlements": []any{}, "attachment_size_limit": attachmentSizeLimit, "data": data,
	}
	if in.GuildID != "" {
		if guildCmd {
			data["guild_id"] = in.GuildID
		}
		ch := s.channelObject(k, 0)
		for j := range s.opts.ChannelsPerGuild {
			if strconv.FormatUint(channelID(k, j), 10) == p.channel {
				ch = s.channelObject(k, j)
			}
		}
		ch.ID = p.channel // a channel the guild does not list is taken for its first
		d["channel"] = struct {
			channelJSON
			Permissions string `json:"permissions"`
		}{ch, everyonePermissions}
		d["guild_id"] = in.GuildID
		d["guild"] = map[string]any{"id": in.GuildID, "locale": "en-US", "features": []string{}}
		d["guild_locale"] = "en-US"
		d["context"] = 0
		d["authorizing_integration_owners"] = map[string]string{"0": in.GuildID}
		d["member"] = memberJSON{User: user, Roles: []string{}, JoinedAt: s.joinedAt(), Permissions: "8"}
	} else {
		d["channel"] = map[string]any{"id": p.channel, "type": 1, "last_message_id": nil, "flags": 0,
			"recipients": []userJSON{user}}
		d["user"] = user
		d["context"] = 1
		d["authorizing_integration_owners"] = map[string]string{"0": "0"}
	}
	b, _ := json.Marshal(d)
	return b
}

type replyBody struct {
	Type int `json:"type"`
	Data *struct {
		Content string `json:"content"`
		Flags   int    `json:"flags"`
	} `json:"data"`
}

// interactionCallback is POST interactions/{id}/{token}/callback: 204 for
// the first response of type 4, 5 or 9; 400 (code 40060) for a second one.
func (s *Server) interactionCallback(w http.ResponseWriter, r *http.Request) {
	var body replyBody
	if !decodeBody(w, r, &body) {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[r.PathValue("id")]
	if p == nil {
		writeError(w, http.StatusNotFound, 10062, "Unknown interaction")
		return
	}
	if p.token != r.PathValue("token") {
		writeError(w, http.StatusUnauthorized, 50027, "Invalid Webhook Token")
		return
	}
	rp := Reply{Via: "callback", Type: body.Type, At: now, Latency: now.Sub(p.sentAt), Status: http.StatusNoContent}
	if body.Data != nil {
		rp.Content = body.Data.Content
	}
	switch {
	case p.acked:
		rp.Status = http.StatusBadRequest
	case body.Type != 4 && body.Type != 5 && body.Type != 9:
		rp.Status = http.StatusBadRequest
	}
	s.rec.reply(p.id, rp)
	switch {
	case p.acked:
		writeError(w, http.StatusBadRequest, 40060, "Interaction has already been acknowledged.")
		return
	case rp.Status == http.StatusBadRequest:
		formError(w, "type", "BASE_TYPE_CHOICES", "Value must be one of {4, 5, 9} for an application command.")
		return
	}
	p.acked = true
	if body.Type != 5 {
		p.content = rp.Content
		s.completeLocked(p, rp)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) completeLocked(p *pendingInteraction, rp Reply) {
	if !p.completed {
		p.completed, p.reply = true, rp
		close(p.done)
	}
}

// webhookPending finds the interaction of a webhook route, or answers the
// error. Caller holds s.mu.
func (s *Server) webhookPendingLocked(w http.ResponseWriter, r *http.Request) *pendingInteraction {
	if r.PathValue("app") != s.opts.ApplicationID {
		writeError(w, http.StatusNotFound, 10015, "Unknown Webhook")
		return nil
	}
	tok := r.PathValue("token")
	for _, p := range s.pending {
		if p.token == tok {
			return p
		}
	}
	writeError(w, http.StatusNotFound, 10015, "Unknown Webhook")
	return nil
}

// followup is POST webhooks/{app}/{token}: a follow-up message; 200 with
// the message when ?wait=true, else 204.
func (s *Server) followup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Content string `json:"content"`
		Flags   int    `json:"flags"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.webhookPendingLocked(w, r)
	if p == nil {
		return
	}
	rp := Reply{Via: "followup", Content: body.Content, At: now, Latency: now.Sub(p.sentAt), Status: http.StatusNoContent}
	if r.URL.Query().Get("wait") == "true" {
		rp.Status = http.StatusOK
	}
	s.rec.reply(p.id, rp)
	s.completeLocked(p, rp)
	if rp.Status == http.StatusNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, s.webhookMessage(p, s.ids.next(), body.Content, body.Flags))
}

func (s *Server) webhookMessage(p *pendingInteraction, id, content string, flags int) map[string]any {
	m := s.messageJSON(id, p.channel, content, flags)
	m["webhook_id"] = s.opts.ApplicationID
	m["application_id"] = s.opts.ApplicationID
	m["type"] = 20
	return m
}

// editReply is PATCH webhooks/{app}/{token}/messages/{msg}; editing
// @original before any callback is 404 Unknown Message, as on Discord.
func (s *Server) editReply(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Content *string `json:"content"`
		Flags   int     `json:"flags"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.webhookPendingLocked(w, r)
	if p == nil {
		return
	}
	msg := r.PathValue("msg")
	if msg == "@original" && !p.acked {
		writeError(w, http.StatusNotFound, 10008, "Unknown Message")
		return
	}
	content := p.content
	if body.Content != nil {
		content = *body.Content
	}
	rp := Reply{Via: "edit", Content: content, At: now, Latency: now.Sub(p.sentAt), Status: http.StatusOK}
	s.rec.reply(p.id, rp)
	s.completeLocked(p, rp)
	id := msg
	if msg == "@original" {
		id, p.content = p.message, content
	}
	writeJSON(w, http.StatusOK, s.webhookMessage(p, id, content, body.Flags))
}

func (s *Server) getReply(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.webhookPendingLocked(w, r)
	if p == nil {
		return
	}
	if r.PathValue("msg") != "@original" || !p.acked {
		writeError(w, http.StatusNotFound, 10008, "Unknown Message")
		return
	}
	writeJSON(w, http.StatusOK, s.webhookMessage(p, p.message, p.content, 0))
}

func (s *Server) deleteReply(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.webhookPendingLocked(w, r); p != nil {
		w.WriteHeader(http.StatusNoContent)
	}
}
