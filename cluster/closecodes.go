package cluster

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// fatalCloseCodes are the gateway close codes that no reconnect can cure,
// with what they mean and what the operator should do.
var fatalCloseCodes = map[int]struct{ meaning, action string }{
	4004: {"authentication failed",
		"the token is wrong or was reset: put the bot's current token from the developer portal in DISCORD_TOKEN, the token file or the systemd credential"},
	4010: {"invalid shard",
		"the shard id or count was refused: check -shards (with max_concurrency above 1 it must be a multiple of it)"},
	4011: {"sharding required",
		"a shard has too many guilds (2500 at most): raise -shards or use -shards auto"},
	4012: {"invalid API version",
		"Discord no longer serves this gateway version: upgrade shardvisor"},
	4013: {"invalid intents",
		"-intents holds a bit Discord does not know: check its value"},
	4014: {"disallowed intents",
		"enable the privileged intent (server members, presence or message content) for this bot in the developer portal, or remove it from -intents"},
}

// FatalCloseError is a gateway close that stops the cluster with the fatal
// configuration status: reconnecting would only fail again, and every
// IDENTIFY would spend one of the day's session starts.
type FatalCloseError struct {
	Shard   int
	Code    int
	Meaning string
	Action  string
}

func (e *FatalCloseError) Error() string {
	return fmt.Sprintf("shard %d: gateway closed with %d (%s): %s", e.Shard, e.Code, e.Meaning, e.Action)
}

// fatalClose returns a *FatalCloseError if err (from Open) or code (the
// close frame the gate saw) is one of the fatal close codes, else nil. A 401
// from the REST call Open makes first (GET /gateway) means what 4004 means.
func fatalClose(shard int, err error, code int) *FatalCloseError {
	var ce *websocket.CloseError
	var re *discordgo.RESTError
	switch {
	case errors.As(err, &ce):
		code = ce.Code
	case errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == http.StatusUnauthorized:
		code = 4004
	}
	if f, ok := fatalCloseCodes[code]; ok {
		return &FatalCloseError{Shard: shard, Code: code, Meaning: f.meaning, Action: f.action}
	}
	return nil
}
