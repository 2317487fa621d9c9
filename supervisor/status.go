package supervisor

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// ClusterState is where a cluster's process stands.
type ClusterState string

const (
	ClusterStarting ClusterState = "starting" // running, not every shard ready yet
	ClusterReady    ClusterState = "ready"    // running, every shard ready
	ClusterBackoff  ClusterState = "backoff"  // exited; waiting to be started again
	ClusterStopping ClusterState = "stopping" // asked to stop
	ClusterStopped  ClusterState = "stopped"  // not running, and will not be started
	ClusterFatal    ClusterState = "fatal"    // exited with the fatal configuration status
)

// LastExit is how a cluster's previous process ended.
type LastExit struct {
	Status  string        `json:"status"` // "exit status 1", "signal killed"
	Code    int           `json:"code"`   // -1 when killed by a signal
	Signal  string        `json:"signal,omitempty"`
	Reason  Reason        `json:"reason"`
	At      time.Time     `json:"at"`
	Uptime  time.Duration `json:"uptime_ns"`
	Message string        `json:"message,omitempty"` // e.g. the fatal close code's meaning
}

// ClusterStatus is one cluster as the supervisor knows it.
type ClusterStatus struct {
	ID     int          `json:"id"`
	Shards []int        `json:"shards"`
	State  ClusterState `json:"state"`
	PID    int          `json:"pid,omitempty"`
	// Generation counts the processes started for this cluster.
	Generation int                `json:"generation"`
	StartedAt  time.Time          `json:"started_at,omitzero"`
	Restarts   int                `json:"restarts"`
	RestartsBy map[Reason]int     `json:"restarts_by_reason,omitempty"`
	LastExit   *LastExit          `json:"last_exit,omitempty"`
	Backoff    time.Duration      `json:"backoff_ns,omitempty"`
	NextStart  time.Time          `json:"next_start,omitzero"`
	LastReport time.Time          `json:"last_report,omitzero"`
	ShardState []wire.ShardStatus `json:"shard_status"`
	// Resumable counts the sessions in the process's last checkpoint
	// (-resume-after-crash): those its replacement would RESUME after a
	// crash. Only the count: the sessions themselves are never shown.
	Resumable int `json:"resumable_sessions,omitempty"`
}

// Ready reports whether the cluster's process runs and every shard is ready.
func (c *ClusterStatus) Ready() bool { return c.State == ClusterReady }

// ShardsReady counts the cluster's ready shards.
func (c *ClusterStatus) ShardsReady() int {
	if c.PID == 0 {
		return 0
	}
	n := 0
	for _, s := range c.ShardState {
		if s.State == wire.ShardReady {
			n++
		}
	}
	return n
}

// Snapshot is the whole supervisor's status at one moment: /status.
type Snapshot struct {
	Time          time.Time       `json:"time"`
	Ready         bool            `json:"ready"`
	ShardCount    int             `json:"shard_count"`
	PlanClusters  int             `json:"plan_clusters"`
	Shards        int             `json:"shards"`
	ShardsReady   int             `json:"shards_ready"`
	ClustersReady int             `json:"clusters_ready"`
	Clusters      []ClusterStatus `json:"clusters"`
	// Events are the recent restarts, fatal exits and control requests,
	// oldest first.
	Events []Event `json:"events"`
	// Identify is the local identify queue; nil with a remote one.
	Identify *IdentifyStatus `json:"identify,omitempty"`
	// Reshard is the reshard under way, nil when none is: Clusters above
	// are the live fleet's, serving the bot, until the switch.
	Reshard *ReshardStatus `json:"reshard,omitempty"`
}

// Summary is the one line systemd shows: "58/64 shards ready, 7/8 clusters".
func (s Snapshot) Summary() string {
	line := fmt.Sprintf("%d/%d shards ready, %d/%d clusters", s.ShardsReady, s.Shards, s.ClustersReady, len(s.Clusters))
	if r := s.Reshard; r != nil {
		line += fmt.Sprintf("; resharding %d → %d: %d/%d new shards ready", r.From, r.To, r.ShardsReady, r.Shards)
	}
	return line
}

// Store holds every cluster's status. Safe for concurrent use.
//
// It holds the statuses of the live fleet (the plan whose clusters serve
// the bot) and, during a reshard, those of the next fleet, in shadow
// (reshard.go): each runner and channel updates the set it was made for,
// so that a status that arrives after the switch still lands where it
// belongs.
type Store struct {
	mu      sync.Mutex
	live    *statusSet
	next    *statusSet     // nil but during a reshard
	reshard *ReshardStatus // nil but during a reshard; its Clusters are next's
	changed chan struct{}
	events  events
}

// statusSet is the statuses of one plan's clusters.
type statusSet struct {
	shardCount int
	total      int
	clusters   []ClusterStatus
}

func newStatusSet(p Plan) *statusSet {
	set := &statusSet{shardCount: p.ShardCount, total: p.Total}
	for _, c := range p.Clusters {
		cs := ClusterStatus{ID: c.ID, Shards: slices.Clone(c.Shards), State: ClusterStopped}
		for _, id := range c.Shards {
			cs.ShardState = append(cs.ShardState, wire.ShardStatus{ID: id, State: wire.ShardDown})
		}
		set.clusters = append(set.clusters, cs)
	}
	return set
}

// NewStore returns a store for the plan's clusters, all stopped.
func NewStore(p Plan) *Store {
	return &Store{live: newStatusSet(p), changed: make(chan struct{})}
}

// Changed returns a channel that is closed at the next change.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// wake wakes the waiters; s.mu is held.
func (s *Store) wake() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// liveSet is the live fleet's statuses.
func (s *Store) liveSet() *statusSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// updateIn applies f to cluster id's status in set and wakes the waiters.
func (s *Store) updateIn(set *statusSet, id int, f func(*ClusterStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range set.clusters {
		if set.clusters[i].ID == id {
			f(&set.clusters[i])
			c := &set.clusters[i]
			if c.State == ClusterStarting || c.State == ClusterReady {
				c.State = ClusterStarting
				if c.ShardsReady() == len(c.Shards) {
					c.State = ClusterReady
				}
			}
			s.wake()
			return
		}
	}
}

// Cluster returns a copy of cluster id's status in the live fleet.
func (s *Store) Cluster(id int) (ClusterStatus, bool) { return s.clusterIn(s.liveSet(), id) }

// clusterIn returns a copy of cluster id's status in set.
func (s *Store) clusterIn(set *statusSet, id int) (ClusterStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range set.clusters {
		if c.ID == id {
			return cloneStatus(c), true
		}
	}
	return ClusterStatus{}, false
}

func cloneStatus(c ClusterStatus) ClusterStatus {
	c.Shards = slices.Clone(c.Shards)
	c.ShardState = slices.Clone(c.ShardState)
	if c.RestartsBy != nil {
		m := make(map[Reason]int, len(c.RestartsBy))
		for k, v := range c.RestartsBy {
			m[k] = v
		}
		c.RestartsBy = m
	}
	if c.LastExit != nil {
		e := *c.LastExit
		c.LastExit = &e
	}
	return c
}

// Snapshot returns a deep copy of everything.
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Time: time.Now(), ShardCount: s.live.shardCount, PlanClusters: s.live.total, Events: s.events.list()}
	for _, c := range s.live.clusters {
		snap.Clusters = append(snap.Clusters, cloneStatus(c))
		snap.Shards += len(c.Shards)
		snap.ShardsReady += c.ShardsReady()
		if c.Ready() {
			snap.ClustersReady++
		}
	}
	snap.Ready = len(s.live.clusters) > 0 && snap.ClustersReady == len(s.live.clusters)
	if s.reshard != nil {
		r := *s.reshard
		r.Clusters = nil
		for _, c := range s.next.clusters {
			r.Clusters = append(r.Clusters, cloneStatus(c))
			r.Shards += len(c.Shards)
			r.ShardsReady += c.ShardsReady()
		}
		snap.Reshard = &r
	}
	return snap
}

func (c *ClusterStatus) setShards(report []wire.ShardStatus, at time.Time) {
	c.LastReport = at
	for _, r := range report {
		for i := range c.ShardState {
			if c.ShardState[i].ID == r.ID {
				c.ShardState[i] = r
			}
		}
	}
}

// resetShards marks every shard down, from `since`.
func (c *ClusterStatus) resetShards(since time.Time) {
	for i := range c.ShardState {
		c.ShardState[i] = wire.ShardStatus{ID: c.ShardState[i].ID, State: wire.ShardDown, Since: since,
			LastIdentify: c.ShardState[i].LastIdentify}
	}
}

// beginReshard adds the next fleet's statuses, all stopped, and the
// reshard's status; it returns the set the next fleet's runners update.
func (s *Store) beginReshard(p Plan, r ReshardStatus) *statusSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next, s.reshard = newStatusSet(p), &r
	s.wake()
	return s.next
}

// reshardPhase moves the reshard under way to phase.
func (s *Store) reshardPhase(phase string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reshard != nil {
		s.reshard.Phase = phase
		s.wake()
	}
}

// endReshard ends the reshard under way: live, if set, becomes the live
// fleet (the switch); nil drops the next fleet (abandoned).
func (s *Store) endReshard(live *statusSet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live != nil {
		s.live = live
	}
	s.next, s.reshard = nil, nil
	s.wake()
}

// resharding reports whether a reshard is under way.
func (s *Store) resharding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reshard != nil
}
