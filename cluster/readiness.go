package cluster

// readiness follows a shard's guilds and whether it has all of them, from
// its sessions' dispatches. Its methods must be called in the order the
// gateway sent the frames, with identify where each new IDENTIFY went out:
// the shard makes sure of it by running its own handlers synchronously in
// discordgo's reading goroutine (see newShard), where the gate's
// identifySent runs too. It is not safe for concurrent use; the shard
// calls it under its lock.
//
// A shard is ready once a READY arrived and each guild READY listed was
// settled in that same session: created (GUILD_CREATE), removed, or gone
// into an outage (GUILD_DELETE, which Discord sends instead of the
// GUILD_CREATE it will not send until the outage ends). A new IDENTIFY ends
// the wait for the previous session's guilds; its READY starts a new one.
type readiness struct {
	// guilds are the shard's guilds: READY's, plus those created since,
	// less those removed (an outage keeps a guild).
	guilds map[string]struct{}
	// pending are READY's guilds not yet settled; nil when not waiting.
	pending map[string]struct{}
	// gen counts READYs and IDENTIFYs: a guild-ready timeout armed for one
	// READY is stale once gen has moved on.
	gen uint64
}

// waiting reports whether a READY's guilds are still awaited.
func (r *readiness) waiting() bool { return r.pending != nil }

// identify is a new IDENTIFY sent: the previous session's guilds will not
// come any more, and a guild-ready timeout armed for its READY is stale.
func (r *readiness) identify() {
	r.pending = nil
	r.gen++
}

// ready is a READY listing guilds. It reports whether the shard is ready
// at once (no guilds), and the generation a guild-ready timeout must name.
func (r *readiness) ready(guilds []string) (done bool, gen uint64) {
	r.gen++
	r.guilds = make(map[string]struct{}, len(guilds))
	r.pending = make(map[string]struct{}, len(guilds))
	for _, id := range guilds {
		r.guilds[id] = struct{}{}
		r.pending[id] = struct{}{}
	}
	if len(r.pending) == 0 {
		r.pending = nil
		return true, r.gen
	}
	return false, r.gen
}

// guildCreate is a GUILD_CREATE; it reports whether it settled the last
// pending guild.
func (r *readiness) guildCreate(id string) (done bool) {
	if r.guilds == nil {
		r.guilds = map[string]struct{}{}
	}
	r.guilds[id] = struct{}{}
	return r.settle(id)
}

// guildDelete is a GUILD_DELETE: a removal (outage false) drops the guild,
// an outage keeps it. Either settles it if READY's wait was for it; it
// reports whether it settled the last pending guild.
func (r *readiness) guildDelete(id string, outage bool) (done bool) {
	if !outage {
		delete(r.guilds, id)
	}
	return r.settle(id)
}

func (r *readiness) settle(id string) bool {
	if r.pending == nil {
		return false
	}
	delete(r.pending, id)
	if len(r.pending) == 0 {
		r.pending = nil
		return true
	}
	return false
}

// timeout is the guild-ready timeout armed for generation gen. If that
// READY's guilds are still awaited, the wait ends and timeout returns how
// many were missing and true; a stale or needless timeout returns false.
func (r *readiness) timeout(gen uint64) (missing int, ended bool) {
	if gen != r.gen || r.pending == nil {
		return 0, false
	}
	missing = len(r.pending)
	r.pending = nil
	return missing, true
}

// count is the number of the shard's guilds.
func (r *readiness) count() int { return len(r.guilds) }
