// Package discordapi holds the few REST calls shardvisor itself makes
// (the bot's own commands go through discordgo sessions): the gateway's
// sharding facts and the registration of application commands.
package discordapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/internal/apiurl"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
)

// Client calls Discord's REST API with the bot's token.
type Client struct {
	s *discordgo.Session
}

// New returns a client; hc decides where requests go (see apiurl).
func New(token secret.Token, hc *http.Client) *Client {
	s, _ := discordgo.New("Bot " + token.Reveal())
	s.Client = hc
	s.MaxRestRetries = 2
	return &Client{s: s}
}

// GatewayBot is GET /gateway/bot: the recommended shard count, the identify
// concurrency and the session start budget.
type GatewayBot struct {
	Shards         int
	MaxConcurrency int
	Budget         identify.Budget
}

// GatewayBot asks Discord for the sharding facts.
func (c *Client) GatewayBot(ctx context.Context) (GatewayBot, error) {
	asked := time.Now()
	r, err := c.s.GatewayBot(discordgo.WithContext(ctx))
	if err != nil {
		return GatewayBot{}, fmt.Errorf("get gateway/bot: %w", apiurl.Dialled(err))
	}
	l := r.SessionStartLimit
	g := GatewayBot{
		Shards:         r.Shards,
		MaxConcurrency: max(l.MaxConcurrency, 1),
		Budget: identify.Budget{Total: l.Total, Remaining: l.Remaining,
			ResetAt: time.Now().Add(time.Duration(l.ResetAfter) * time.Millisecond), Asked: asked},
	}
	if g.Shards < 1 {
		return g, fmt.Errorf("get gateway/bot: Discord recommends %d shards", r.Shards)
	}
	return g, nil
}

// Budget implements identify.FetchFunc.
func (c *Client) Budget(ctx context.Context) (identify.Budget, error) {
	g, err := c.GatewayBot(ctx)
	return g.Budget, err
}

// RegisterCommands overwrites the application's slash commands with cmds:
// globally when guildID is empty, else in that guild only (commands there
// appear at once, which suits development). It returns the application id.
func (c *Client) RegisterCommands(ctx context.Context, cmds []*discordgo.ApplicationCommand, guildID string) (string, error) {
	body, err := c.s.Request(http.MethodGet, discordgo.EndpointApplication("@me"), nil, discordgo.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("register commands: read application: %w", apiurl.Dialled(err))
	}
	var app discordgo.Application
	if err := json.Unmarshal(body, &app); err != nil || app.ID == "" {
		return "", fmt.Errorf("register commands: read application: no id in %.200q", body)
	}
	if cmds == nil {
		cmds = []*discordgo.ApplicationCommand{}
	}
	if _, err := c.s.ApplicationCommandBulkOverwrite(app.ID, guildID, cmds, discordgo.WithContext(ctx)); err != nil {
		return app.ID, fmt.Errorf("register commands: %w", apiurl.Dialled(err))
	}
	return app.ID, nil
}

// UserID asks Discord who the bot is (GET users/@me) and returns its id.
func (c *Client) UserID(ctx context.Context) (string, error) {
	u, err := c.s.User("@me", discordgo.WithContext(ctx))
	switch {
	case err != nil:
		return "", fmt.Errorf("get users/@me: %w", apiurl.Dialled(err))
	case u == nil || u.ID == "":
		return "", errors.New("get users/@me: no id in the answer")
	}
	return u.ID, nil
}
