package wire

// Resharding without downtime. The supervisor starts the clusters of the
// new shard count beside the old ones, each welcomed with Shadow: it
// connects its shards through the identify queue, fills their State,
// reports their status and serves its metrics and fleet requests, but
// calls none of the bot's handlers and answers no interaction (the old
// clusters do). When every new shard is ready, the supervisor sends each
// new cluster Live, and then stops the old clusters. An event a shadow
// cluster received before Live is not handed to the bot afterwards: from
// Live on, it handles the events that arrive.

// TypeLive [P→C] tells a cluster in shadow to go live.
const TypeLive Type = 22

// Live tells a cluster welcomed with Shadow to go live: from now on it
// calls the bot's handlers and answers interactions. To a cluster not in
// shadow (or already live) it is harmless and changes nothing.
type Live struct{}

func (*Live) Type() Type      { return TypeLive }
func (*Live) Validate() error { return nil }
