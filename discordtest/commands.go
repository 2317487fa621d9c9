package discordtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Application commands, global (scope "") and per guild (scope = guild id).

// command is a stored application command: its JSON object as returned.
type command struct {
	id, name string
	typ      int
	obj      map[string]json.RawMessage
}

// commandScope checks the application and guild of a commands route and
// returns the scope, or answers the error.
func (s *Server) commandScope(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.PathValue("app") != s.opts.ApplicationID {
		writeError(w, http.StatusNotFound, 10002, "Unknown Application")
		return "", false
	}
	g := r.PathValue("guild")
	if g == "" {
		return "", true
	}
	if _, ok := guildIndex(g, s.guildTotal()); !ok {
		writeError(w, http.StatusForbidden, 50001, "Missing Access")
		return "", false
	}
	return g, true
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.commandScope(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	out := make([]map[string]json.RawMessage, 0, len(s.commands[scope]))
	for _, c := range s.commands[scope] {
		out = append(out, c.obj)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// putCommands is the bulk overwrite: the scope's commands become the ones
// sent; a command keeps its id when one of the same name and type existed,
// and every command gets a new version.
func (s *Server) putCommands(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.commandScope(w, r)
	if !ok {
		return
	}
	var in []map[string]json.RawMessage
	if !decodeBody(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cmds := make([]command, 0, len(in))
	seen := map[string]bool{}
	perType := map[int]int{}
	for i, obj := range in {
		c, path, msg := s.buildCommand(scope, obj)
		if msg != "" {
			formError(w, fmt.Sprintf("%d.%s", i, path), "BASE_TYPE_INVALID", msg)
			return
		}
		key := fmt.Sprintf("%d/%s", c.typ, c.name)
		if seen[key] {
			formError(w, fmt.Sprintf("%d.name", i), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique")
			return
		}
		seen[key] = true
		perType[c.typ]++
		if perType[1] > 100 || perType[2] > 15 || perType[3] > 15 {
			formError(w, "", "APPLICATION_COMMANDS_TOO_MANY", "Maximum number of application commands reached")
			return
		}
		cmds = append(cmds, c)
	}
	for i := range cmds {
		s.keepIDLocked(scope, &cmds[i])
	}
	s.commands[scope] = cmds
	out := make([]map[string]json.RawMessage, len(cmds))
	for i, c := range cmds {
		out[i] = c.obj
	}
	writeJSON(w, http.StatusOK, out)
}

// postCommand creates a command, or overwrites the one with its name and
// type (200 instead of 201).
func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.commandScope(w, r)
	if !ok {
		return
	}
	var obj map[string]json.RawMessage
	if !decodeBody(w, r, &obj) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, path, msg := s.buildCommand(scope, obj)
	if msg != "" {
		formError(w, path, "BASE_TYPE_INVALID", msg)
		return
	}
	status := http.StatusCreated
	if s.keepIDLocked(scope, &c) {
		status = http.StatusOK
	}
	list := s.commands[scope]
	replaced := false
	for i := range list {
		if list[i].id == c.id {
			list[i], replaced = c, true
		}
	}
	if !replaced {
		s.commands[scope] = append(list, c)
	}
	writeJSON(w, status, c.obj)
}

func (s *Server) deleteCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.commandScope(w, r)
	if !ok {
		return
	}
	id := r.PathValue("cmd")
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.commands[scope]
	for i := range list {
		if list[i].id == id {
			s.commands[scope] = append(list[:i:i], list[i+1:]...)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeError(w, http.StatusNotFound, 10063, "Unknown application command")
}

// keepIDLocked gives c the id of the scope's command of the same name and
// type, if there is one, and reports whether there was.
func (s *Server) keepIDLocked(scope string, c *command) bool {
	for _, old := range s.commands[scope] {
		if old.name == c.name && old.typ == c.typ {
			c.id = old.id
			c.obj["id"] = mustJSON(old.id)
			return true
		}
	}
	return false
}

// buildCommand validates a command object and completes it with id,
// application_id, version, type and guild_id. On error it returns the
// offending field and a message.
func (s *Server) buildCommand(scope string, obj map[string]json.RawMessage) (command, string, string) {
	var c command
	if obj == nil {
		return c, "", "command must be an object"
	}
	if err := json.Unmarshal(obj["name"], &c.name); err != nil || c.name == "" {
		return c, "name", "name is required and must be a string"
	}
	c.typ = 1
	if raw, ok := obj["type"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &c.typ); err != nil || c.typ < 1 || c.typ > 4 {
			return c, "type", "type must be 1 (chat input), 2 (user), 3 (message) or 4 (entry point)"
		}
	}
	if n := utf8.RuneCountInString(c.name); n > 32 {
		return c, "name", "name must be 1-32 characters"
	}
	var desc string
	if raw, ok := obj["description"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &desc); err != nil {
			return c, "description", "description must be a string"
		}
	}
	if c.typ == 1 {
		if c.name != strings.ToLower(c.name) || strings.ContainsAny(c.name, " \t") {
			return c, "name", "chat input command names must be lower case, without spaces"
		}
		if n := utf8.RuneCountInString(desc); n < 1 || n > 100 {
			return c, "description", "description must be 1-100 characters"
		}
	}
	c.id = s.ids.next()
	c.obj = make(map[string]json.RawMessage, len(obj)+6)
	for k, v := range obj {
		c.obj[k] = v
	}
	c.obj["id"] = mustJSON(c.id)
	c.obj["application_id"] = mustJSON(s.opts.ApplicationID)
	c.obj["version"] = mustJSON(s.ids.next())
	c.obj["type"] = mustJSON(c.typ)
	c.obj["description"] = mustJSON(desc)
	if scope != "" {
		c.obj["guild_id"] = mustJSON(scope)
	}
	if _, ok := c.obj["default_member_permissions"]; !ok {
		c.obj["default_member_permissions"] = json.RawMessage("null")
	}
	if _, ok := c.obj["nsfw"]; !ok {
		c.obj["nsfw"] = json.RawMessage("false")
	}
	return c, "", ""
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// commandIDLocked returns the id of the slash command named name visible
// in guild (guild scope first, then global) and whether it is a guild
// command, or "" when none is registered.
func (s *Server) commandIDLocked(guild, name string) (id string, inGuild bool) {
	for _, scope := range []string{guild, ""} {
		for _, c := range s.commands[scope] {
			if c.name == name && c.typ == 1 {
				return c.id, scope != ""
			}
		}
	}
	return "", false
}
