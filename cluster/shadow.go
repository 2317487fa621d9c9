package cluster

import (
	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
)

// Shadow: resharding without downtime (issue 14). A cluster welcomed with
// Shadow runs as any other — its shards identify through the supervisor's
// queue, fill their State, report their status; its metrics and fleet
// requests are served — but hands no event to the bot: none of the bot's
// handlers is called and no interaction is dispatched to a command (the
// old shard set, still running, answers them). The supervisor's Live ends
// the shadow: from then on every event that arrives is handed to the bot.
// Nothing is buffered, and nothing received in shadow is replayed: a
// shard's READY and GUILD_CREATEs came in shadow, so the bot's handlers
// see its first events from the switch on, with s.State already full.

// Frame decisions: whether the bot is handed the gateway dispatch being
// handled (shard.frame).
const (
	frameUndecided int32 = iota
	frameHandled
	frameWithheld
)

// handles reports whether the bot is handed event: every event of a live
// cluster, none of a cluster in shadow. A gateway dispatch is decided once,
// by the first of its handlers to ask, for every handler of its frame (the
// typed event and the *discordgo.Event alike, which discordgo calls one
// after the other in the shard's reading goroutine), so that a Live
// arriving in the middle does not give the frame to some of the bot's
// handlers and not to others. discordgo's own events (Connect, Disconnect,
// RateLimit), raised from other goroutines, are decided each on its own.
func (sh *shard) handles(event any) bool {
	switch event.(type) {
	case *discordgo.Connect, *discordgo.Disconnect, *discordgo.RateLimit:
		return sh.c.live.Load()
	}
	if d := sh.frame.Load(); d != frameUndecided {
		return d == frameHandled
	}
	d := frameWithheld
	if sh.c.live.Load() {
		d = frameHandled
	}
	if !sh.frame.CompareAndSwap(frameUndecided, d) {
		d = sh.frame.Load()
	}
	return d == frameHandled
}

// frameDone ends the frame's decision. It is the session's last handler:
// discordgo calls the *discordgo.Event handlers last for every frame, in
// the order they were added.
func (sh *shard) frameDone(*discordgo.Session, *discordgo.Event) { sh.frame.Store(frameUndecided) }

// goLive is the supervisor's Live: from now on the bot is handed every
// event. To a cluster not in shadow it changes nothing.
func (c *Cluster) goLive() {
	if c.live.Swap(true) {
		c.log.Debug("live: the cluster is not in shadow; nothing to do")
		return
	}
	c.log.Info("going live", "shards", len(c.shards))
}

func newShadowGauge(reg prometheus.Registerer, c *Cluster) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shardvisor_cluster_shadow",
		Help: "1 while the cluster runs in shadow (a reshard's new shard set: connected, caching, calling no handler), 0 once live.",
	}, func() float64 {
		if c.live.Load() {
			return 0
		}
		return 1
	}))
}
