package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/shardvisor/shardvisor/internal/discordapi"
	"github.com/shardvisor/shardvisor/internal/sessiondir"
	"github.com/shardvisor/shardvisor/supervisor"
)

// reshardCheckEvery is how often -auto-reshard asks Discord for its
// recommended shard count once running.
const reshardCheckEvery = time.Hour

// gatewayBotFunc is how a reshard asks Discord for its recommendation and
// the session starts left.
func gatewayBotFunc(api *discordapi.Client) func(context.Context) (supervisor.GatewayBot, error) {
	return func(ctx context.Context) (supervisor.GatewayBot, error) {
		g, err := api.GatewayBot(ctx)
		if err != nil {
			return supervisor.GatewayBot{}, err
		}
		return supervisor.GatewayBot{Shards: g.Shards, Budget: g.Budget}, nil
	}
}

// remembered is the shard count to start with, given the flags' count
// shards: the largest of it, the plan a reshard remembered in -session-dir
// (so that a restart never falls back below a count the bot outgrew) and,
// with -auto-reshard, Discord's recommendation (a reshard at start is a
// start with more shards). A supervisor that runs part of the plan
// (-cluster-ids, -cluster-share) keeps the flags' count: the other
// supervisors of the bot must agree on it. A larger -shards than the
// remembered plan wins; to run fewer than it remembers, lower -shards and
// remove the plan file.
func (cfg *supervisorCfg) remembered(st startup, shards int) int {
	log := cfg.log
	if cfg.plan.ClusterIDs != nil || cfg.plan.Share.Count > 0 {
		return shards
	}
	n := shards
	if st.sessions != nil {
		p, ok, err := st.sessions.ReadPlan()
		switch {
		case err != nil:
			log.Warn("the remembered plan is not used; the flags plan the shards", "err", err)
		case ok && p.ShardCount > n:
			log.Info("starting with the shard count a reshard moved to", "shards", p.ShardCount, "flags_shards", shards,
				"written", p.Written.Format(time.RFC3339), "reason", p.Reason)
			n = p.ShardCount
		case ok:
			log.Info("the remembered plan has no more shards than the flags; the flags plan them", "remembered_shards", p.ShardCount, "shards", shards)
		}
	}
	if cfg.flags.autoReshard && st.gb != nil && st.gb.Shards > n {
		log.Info("-auto-reshard: starting with Discord's recommended shard count", "shards", st.gb.Shards, "planned_shards", n)
		n = st.gb.Shards
	}
	return n
}

// rememberPlan writes each reshard's plan to the session dir, if there is
// one, for the next start.
func (cfg *supervisorCfg) rememberPlan(d *sessiondir.Dir) func(supervisor.Plan, string) {
	if d == nil {
		return nil
	}
	return func(p supervisor.Plan, reason string) {
		rec := sessiondir.Plan{ShardCount: p.ShardCount, ShardsPerCluster: cfg.plan.ShardsPerCluster, Written: time.Now(),
			Reason: fmt.Sprintf("reshard to %d shards (%s)", p.ShardCount, reason)}
		if cfg.plan.Clusters > 0 {
			rec.ShardsPerCluster, rec.Clusters = 0, cfg.plan.Clusters
		}
		if err := d.WritePlan(rec); err != nil {
			cfg.log.Error("remember the plan for the next start; it starts with the flags' shard count", "err", err)
			return
		}
		cfg.log.Info("plan remembered for the next start", "shards", p.ShardCount)
	}
}
