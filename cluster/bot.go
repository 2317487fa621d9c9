package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Bot is what a bot built on shardvisor adds to it: slash commands and
// discordgo event handlers. It is set up in main before shardvisor starts and
// not changed afterwards. A bot's whole main:
//
//	func main() {
//		bot := cluster.NewBot()
//		bot.Command(cluster.Ping())
//		bot.Command(&discordgo.ApplicationCommand{Name: "roll", Description: "Roll a die"},
//			func(i *cluster.Interaction) error { return i.Reply(fmt.Sprint(rand.IntN(6) + 1)) })
//		bot.Handle(func(s *discordgo.Session, m *discordgo.MessageCreate) { ... })
//		bot.Serve("guild-count", func(ctx context.Context, c *cluster.Local, _ json.RawMessage) (any, error) { ... })
//		cli.Main(bot)
//	}
type Bot struct {
	commands []*discordgo.ApplicationCommand
	funcs    map[string]CommandFunc
	handlers []any
	served   map[string]ServeFunc
}

// CommandFunc answers one slash command. An error is logged and counted;
// the user sees whatever the function replied before it.
type CommandFunc func(*Interaction) error

// Interaction is one slash command invocation.
type Interaction struct {
	*discordgo.InteractionCreate
	Session *discordgo.Session
	// Context ends when the cluster stops.
	Context context.Context
	ShardID int
}

// Reply answers the interaction with a message.
func (i *Interaction) Reply(content string) error {
	return i.Respond(&discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Content: content},
	})
}

// Respond answers the interaction with r.
func (i *Interaction) Respond(r *discordgo.InteractionResponse) error {
	return i.Session.InteractionRespond(i.Interaction, r, discordgo.WithContext(i.Context))
}

// NewBot returns a bot with no commands or handlers.
func NewBot() *Bot { return &Bot{funcs: map[string]CommandFunc{}} }

// Command adds a slash command. It panics if the name is empty or already
// taken: both are mistakes in the bot's own code.
func (b *Bot) Command(cmd *discordgo.ApplicationCommand, fn CommandFunc) {
	if cmd == nil || cmd.Name == "" || fn == nil {
		panic("cluster: Command needs a named command and a function")
	}
	if _, dup := b.funcs[cmd.Name]; dup {
		panic(fmt.Sprintf("cluster: command %q added twice", cmd.Name))
	}
	b.commands = append(b.commands, cmd)
	b.funcs[cmd.Name] = fn
}

// Handle adds a discordgo event handler (any function discordgo's
// Session.AddHandler takes), added to every shard's session. Each call runs
// in a goroutine of its own, as in discordgo by default, in no fixed order
// with the calls for other events; a handler may block without holding up
// the shard. (The sessions set SyncEvents for shardvisor's own handlers:
// the bot's must not set it back.)
//
// During a reshard the new shard set runs in shadow beside the old one
// until every new shard is ready: connected and filling its State, but
// handing no event to the bot's handlers and no interaction to its
// commands. A new shard's READY and GUILD_CREATEs happen in shadow and are
// not replayed when it goes live, so the handlers see the shard's first
// events from the switch on, with s.State already full: a Ready handler
// does not run for it, and nothing that must run once per shard belongs
// there. Each event is handed to every handler of its type or to none.
func (b *Bot) Handle(handler any) { b.handlers = append(b.handlers, handler) }

// Commands returns the slash commands, for registration with Discord.
func (b *Bot) Commands() []*discordgo.ApplicationCommand { return slices.Clone(b.commands) }

// CommandNames returns the commands' names, for metrics.
func (b *Bot) CommandNames() []string {
	var names []string
	for _, c := range b.commands {
		names = append(names, c.Name)
	}
	return names
}

// Interaction outcomes, the outcome label of shardvisor_interactions_total.
const (
	OutcomeOK      = "ok"
	OutcomeError   = "error"
	OutcomePanic   = "panic"
	OutcomeUnknown = "unknown_command"
)

// dispatch runs the command an interaction names; a panic is recovered and
// counted, never taking the cluster down.
func (b *Bot) dispatch(ctx context.Context, log *slog.Logger, m *clusterMetrics, s *discordgo.Session, shardID int, ic *discordgo.InteractionCreate) {
	if ic.Type != discordgo.InteractionApplicationCommand {
		return
	}
	name := ic.ApplicationCommandData().Name
	fn, ok := b.funcs[name]
	if !ok {
		// Commands still registered at Discord from an older build: say so
		// rather than leave the user with "the application did not respond".
		m.interaction("", OutcomeUnknown, 0)
		log.Warn("interaction for an unknown command", "shard_id", shardID, "command", name)
		_ = s.InteractionRespond(ic.Interaction, &discordgo.InteractionResponse{
			Type: discordgo.InteractionResponseChannelMessageWithSource,
			Data: &discordgo.InteractionResponseData{Content: "This command is not available any more.", Flags: discordgo.MessageFlagsEphemeral},
		}, discordgo.WithContext(ctx))
		return
	}
	start := time.Now()
	outcome := OutcomeOK
	defer func() {
		if p := recover(); p != nil {
			outcome = OutcomePanic
			log.Error("command panicked", "shard_id", shardID, "command", name, "panic", fmt.Sprint(p))
		}
		m.interaction(name, outcome, time.Since(start))
	}()
	if err := fn(&Interaction{InteractionCreate: ic, Session: s, Context: ctx, ShardID: shardID}); err != nil {
		outcome = OutcomeError
		if !errors.Is(err, context.Canceled) {
			log.Warn("command failed", "shard_id", shardID, "command", name, "err", err)
		}
	}
}

// Ping is the /ping command, answering "Pong!".
func Ping() (*discordgo.ApplicationCommand, CommandFunc) {
	return &discordgo.ApplicationCommand{Name: "ping", Description: "Check that the bot answers"},
		func(i *Interaction) error { return i.Reply("Pong!") }
}
