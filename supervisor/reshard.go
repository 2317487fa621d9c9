package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Resharding while the bot stays online. The next fleet (the new shard
// count, split into clusters as the flags split the old one) is started
// beside the live one, in shadow: its shards identify through the same
// queue, connect and fill their caches, but call no handler and answer no
// interaction. When every one of its shards is ready, the switch: each of
// its processes is told to go live, it becomes the live fleet (status,
// metrics, fleet calls, the session dir), and only then is the old fleet
// stopped, its sessions closed with 1000. Around the switch an event may
// be handled by both fleets, for as long as an old process takes to close
// after its SIGTERM; none is handled by neither, since the old fleet stops
// only after the next one was told to go live (TestReshard measures the
// overlap). Until the switch the old fleet serves, and /readyz says so; a
// next fleet that cannot get ready in time, or whose processes fail, is
// stopped and the old fleet goes on untouched.

// GatewayBot is what a reshard asks Discord (GET /gateway/bot).
type GatewayBot struct {
	Shards int             // Discord's recommended shard count
	Budget identify.Budget // the session starts left
}

// ReshardStatus is a reshard under way, for /status and the page.
type ReshardStatus struct {
	From        int             `json:"from_shards"`
	To          int             `json:"to_shards"`
	Reason      string          `json:"reason"`
	Phase       string          `json:"phase"`
	Started     time.Time       `json:"started"`
	Shards      int             `json:"shards"`       // the next fleet's
	ShardsReady int             `json:"shards_ready"` // of those
	Clusters    []ClusterStatus `json:"clusters"`     // the next fleet's, in shadow
}

// Reshard phases.
const (
	ReshardStarting  = "starting"  // the next fleet connects in shadow
	ReshardSwitching = "switching" // it goes live; the old fleet stops next
)

// ReshardAuto as Reshard's shard count takes Discord's recommendation.
const ReshardAuto = 0

// DefaultReshardTimeout is how long a next fleet may take to get every
// shard ready when Config.ReshardTimeout is zero.
const DefaultReshardTimeout = 30 * time.Minute

// closeShardingRequired is Discord's gateway close 4011: the shard would
// hold too many guilds.
const closeShardingRequired = 4011

// errChangeUnderWay refuses a reshard (or a restart) while another change
// of the processes is under way.
var errChangeUnderWay = errors.New("a rolling restart, a restart or a reshard is under way")

// reshardMetrics count reshards by outcome.
type reshardMetrics struct {
	outcomes *prometheus.CounterVec
	took     prometheus.Gauge
}

// Reshard outcomes: the outcome label of shardvisor_reshards_total.
const (
	reshardDone      = "done"
	reshardAbandoned = "abandoned"
	reshardRefused   = "refused"
)

func newReshardMetrics() *reshardMetrics {
	m := &reshardMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_reshards_total",
			Help: "Reshards by outcome: done (the next fleet went live), abandoned (it could not get ready; the old fleet goes on), refused (not begun: e.g. too few session starts left).",
		}, []string{"outcome"}),
		took: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardvisor_reshard_last_duration_seconds",
			Help: "How long the last reshard that was done took, from its start to the switch.",
		}),
	}
	for _, o := range []string{reshardDone, reshardAbandoned, reshardRefused} {
		m.outcomes.WithLabelValues(o)
	}
	return m
}

// Reshard begins a reshard to shards shards (ReshardAuto: Discord's
// recommendation) and returns once the next fleet is on its way, with
// what it plans, or with why it will not: the supervisor stops, another
// change is under way, this supervisor runs only part of the plan, the
// count is the running one or not a valid plan, or the session starts
// left cannot pay for it with a margin. A refused reshard changes
// nothing. Reason is for the logs and the status.
func (s *Supervisor) Reshard(ctx context.Context, shards int, reason string) (ReshardStatus, error) {
	return s.requestReshard(ctx, shards, 0, reason)
}

// requestReshard is Reshard with reshard's atLeast, and a refusal logged,
// counted and put in the events.
func (s *Supervisor) requestReshard(ctx context.Context, shards, atLeast int, reason string) (ReshardStatus, error) {
	st, err := s.reshard(ctx, shards, atLeast, reason)
	if err != nil {
		s.reshards.outcomes.WithLabelValues(reshardRefused).Inc()
		s.log.Warn("reshard refused", "reason", reason, "err", err)
		s.store.Event(Event{Kind: EventReshard, ClusterID: -1, Message: fmt.Sprintf("reshard (%s) refused: %v", reason, err)})
	}
	return st, err
}

// reshard is Reshard; with ReshardAuto, a recommendation below atLeast
// makes it atLeast.
func (s *Supervisor) reshard(ctx context.Context, shards, atLeast int, reason string) (ReshardStatus, error) {
	if s.isStopping() {
		return ReshardStatus{}, errors.New("reshard: the supervisor stops")
	}
	if !s.rolling.CompareAndSwap(false, true) {
		return ReshardStatus{}, fmt.Errorf("reshard: %w", errChangeUnderWay)
	}
	begun := false
	defer func() {
		if !begun {
			s.rolling.Store(false)
		}
	}()
	live := s.live()
	from := live.plan.ShardCount
	if len(live.plan.Clusters) != live.plan.Total {
		return ReshardStatus{}, fmt.Errorf("reshard: this supervisor runs %d of the plan's %d clusters (-cluster-ids or -cluster-share); reshard a bot split across supervisors by giving each the new -shards and restarting them", len(live.plan.Clusters), live.plan.Total)
	}
	if s.cfg.GatewayBot == nil {
		return ReshardStatus{}, errors.New("reshard: no way to ask Discord for the session starts left")
	}
	gb, err := s.cfg.GatewayBot(ctx)
	if err != nil {
		return ReshardStatus{}, fmt.Errorf("reshard: ask Discord for the session starts left: %w", err)
	}
	to := shards
	if to == ReshardAuto {
		to = max(gb.Shards, atLeast)
	}
	if to == from {
		return ReshardStatus{}, fmt.Errorf("reshard to %d shards: the bot runs %d shards already", to, from)
	}
	split := s.cfg.Split
	split.Shards, split.ClusterIDs, split.Share = to, nil, Share{}
	if split.ShardsPerCluster == 0 && split.Clusters == 0 {
		split.Clusters = len(live.plan.Clusters)
	}
	plan, err := NewPlan(split)
	if err != nil {
		return ReshardStatus{}, fmt.Errorf("reshard to %d shards: %w", to, err)
	}
	if s.cfg.CheckPlan != nil {
		// Until the switch both fleets run: this machine must hold both.
		both := plan
		both.Clusters = append(slices.Clone(live.plan.Clusters), plan.Clusters...)
		if err := s.cfg.CheckPlan(both); err != nil {
			return ReshardStatus{}, fmt.Errorf("reshard to %d shards (both fleets run until the switch): %w", to, err)
		}
	}
	if err := budgetCovers(gb.Budget, to); err != nil {
		return ReshardStatus{}, fmt.Errorf("reshard to %d shards: %w", to, err)
	}

	set := s.store.beginReshard(plan, ReshardStatus{From: from, To: to, Reason: reason, Phase: ReshardStarting, Started: time.Now()})
	next := newRoster(s, plan, set, true)
	if !s.addRoster(next) {
		s.store.endReshard(nil)
		return ReshardStatus{}, errors.New("reshard: the supervisor stops")
	}
	begun = true
	s.log.Info("reshard begins: the next fleet starts in shadow beside the live one", "from_shards", from, "to_shards", to,
		"clusters", len(plan.Clusters), "reason", reason, "session_starts_remaining", gb.Budget.Remaining)
	s.store.Event(Event{Kind: EventReshard, ClusterID: -1, Message: fmt.Sprintf("reshard %d → %d shards in %d clusters begins (%s)", from, to, len(plan.Clusters), reason)})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.followReshard(live, next, reason) // it ends the change (s.rolling)
	}()
	snap := s.store.Snapshot()
	return *snap.Reshard, nil
}

// budgetCovers says why the session starts left cannot pay for a fleet of
// shards: every shard identifies once, and a margin stays (the reserve the
// queue keeps, and a tenth for retries).
func budgetCovers(b identify.Budget, shards int) error {
	reserve := identify.DefaultReserve(b.Total)
	margin := reserve + max(1, shards/10)
	if b.Remaining >= shards+margin {
		return nil
	}
	return fmt.Errorf("too few session starts: the new fleet spends %d and a margin of %d stays (the reserve of %d and a tenth for retries), Discord reports %d of %d left, back in %v",
		shards, margin, reserve, b.Remaining, b.Total, time.Until(b.ResetAt).Round(time.Second))
}

// followReshard waits for the next fleet to be ready and switches to it,
// or abandons it.
func (s *Supervisor) followReshard(old, next *roster, reason string) {
	start := time.Now()
	timeout := s.cfg.ReshardTimeout
	if timeout <= 0 {
		timeout = DefaultReshardTimeout
	}
	if err := s.awaitFleet(next, timeout); err != nil {
		next.stop()
		s.rolling.Store(false)
		s.store.endReshard(nil)
		s.reshards.outcomes.WithLabelValues(reshardAbandoned).Inc()
		s.log.Error("reshard abandoned; the live fleet goes on", "from_shards", old.plan.ShardCount, "to_shards", next.plan.ShardCount, "err", err)
		s.store.Event(Event{Kind: EventReshard, ClusterID: -1, Message: fmt.Sprintf("reshard %d → %d abandoned: %v; the live fleet goes on", old.plan.ShardCount, next.plan.ShardCount, err)})
		return
	}
	ready := time.Since(start)
	s.store.reshardPhase(ReshardSwitching)
	switchAt := time.Now()
	next.shadow.Store(false)
	for _, r := range next.runners {
		if ch := r.channel(); ch != nil {
			ch.goLive()
		}
	}
	s.liveRoster.Store(next)
	s.fleet.setRoster(next)
	if s.sessions != nil {
		s.sessions.dir.Rebind(next.plan.ShardCount)
	}
	// The change ends before the status shows it (whoever sees the new
	// fleet may ask for the next change), and the status shows it before
	// the old fleet stops (its stopping clusters are not the live fleet's:
	// /readyz stays 200).
	s.rolling.Store(false)
	s.store.endReshard(next.set)
	old.stop()
	switched := time.Since(switchAt)
	if s.cfg.OnReshard != nil {
		s.cfg.OnReshard(next.plan, reason)
	}
	s.reshards.outcomes.WithLabelValues(reshardDone).Inc()
	s.reshards.took.Set(time.Since(start).Seconds())
	s.log.Info("reshard switched: the next fleet is live, the old one stops", "from_shards", old.plan.ShardCount,
		"to_shards", next.plan.ShardCount, "ready_after", ready.Round(time.Millisecond), "switch", switched)
	s.store.Event(Event{Kind: EventReshard, ClusterID: -1, Message: fmt.Sprintf("reshard %d → %d shards done in %v: the next fleet is live, the old one stops",
		old.plan.ShardCount, next.plan.ShardCount, time.Since(start).Round(time.Millisecond))})
}

// awaitFleet waits until every cluster of ro is ready; an error when one
// of its runners gives up, the timeout passes, or the supervisor stops.
func (s *Supervisor) awaitFleet(ro *roster, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		changed := s.store.Changed()
		ready := 0
		for _, r := range ro.runners {
			if ch := r.channel(); ch != nil {
				if helloed, knows := ch.shadowHello(); helloed && !knows {
					return fmt.Errorf("cluster %d's process (the binary on disk) does not know shadow, an older version: it would call the bot's handlers beside the live fleet", r.cluster.ID)
				}
			}
			if c, _ := s.store.clusterIn(ro.set, r.cluster.ID); c.Ready() {
				ready++
			}
		}
		if ready == len(ro.runners) {
			return nil
		}
		select {
		case <-changed:
		case err := <-ro.failed:
			return err
		case <-deadline.C:
			return fmt.Errorf("%d of %d clusters ready after %v", ready, len(ro.runners), timeout)
		case <-s.stopping:
			return errors.New("the supervisor stops")
		}
	}
}

// goLive tells a shadow process to go live, once; not one whose hello
// did not say it knows shadow (awaitFleet abandons a fleet of those).
func (ch *channel) goLive() {
	if _, knows := ch.shadowHello(); !ch.shadow || !knows {
		return
	}
	ch.liveOnce.Do(func() { ch.send(&wire.Live{}) })
}

// shadowHello reports whether the child said hello, and whether it said
// it honours Welcome.Shadow.
func (ch *channel) shadowHello() (helloed, knows bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.hello != nil, ch.hello != nil && ch.hello.Shadow
}

// reshardFor answers a live cluster's 4011 (sharding required): with
// AutoReshard, a reshard to Discord's recommendation (twice the running
// count if it recommends no more), and the runner waits for it. replaced
// says that the reshard switched (the runner is done); otherwise why says
// what became of it, for the fatal error that follows.
func (r *runner) reshardFor(f *wire.Fatal) (replaced bool, why string) {
	s := r.sup
	if !s.cfg.AutoReshard || r.ro != s.live() {
		return false, ""
	}
	reason := fmt.Sprintf("shard %d closed with 4011 (sharding required)", f.Shard)
	r.log.Warn("a shard holds too many guilds; resharding instead of stopping", "shard_id", f.Shard)
	r.update(func(c *ClusterStatus) {
		c.State = ClusterFatal
		if c.LastExit != nil {
			c.LastExit.Message = reason + "; waiting for the reshard"
		}
	})
	_, err := s.requestReshard(context.Background(), ReshardAuto, 2*r.ro.plan.ShardCount, reason)
	switch {
	case errors.Is(err, errChangeUnderWay): // one already under way: wait for it
	case err != nil:
		return false, "the reshard it asked for was refused: " + err.Error()
	}
	for {
		changed := s.store.Changed()
		if r.ro.isStopping() {
			return true, ""
		}
		if !s.store.resharding() && !s.rolling.Load() {
			return false, "no reshard replaced the fleet"
		}
		select {
		case <-changed:
		case <-r.ro.stopping:
		}
	}
}

// WatchRecommended, with AutoReshard, asks Discord every `every` for its
// recommended shard count and reshards when it exceeds the running one
// (the start itself plans with it: see the cli). It never reshards down.
// It blocks until ctx is done; a failed question is logged and asked
// again at the next turn.
func (s *Supervisor) WatchRecommended(ctx context.Context, every time.Duration) error {
	if !s.cfg.AutoReshard || s.cfg.GatewayBot == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		gb, err := s.cfg.GatewayBot(qctx)
		cancel()
		if err != nil {
			s.log.Warn("ask Discord for its recommended shard count", "err", err)
			continue
		}
		if running := s.live().plan.ShardCount; gb.Shards > running {
			s.Reshard(ctx, gb.Shards, fmt.Sprintf("Discord recommends %d shards, %d run", gb.Shards, running))
		}
	}
}
