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
}

// Summary is the one line systemd shows: "58/64 shards ready, 7/8 clusters".
func (s Snapshot) Summary() string {
	return fmt.Sprintf("%d/%d shards ready, %d/%d clusters", s.ShardsReady, s.Shards, s.ClustersReady, len(s.Clusters))
}

// Store holds every cluster's status. Safe for concurrent use.
type Store struct {
	mu         sync.Mutex
	clusters   []ClusterStatus
	shardCount int
	total      int
	changed    chan struct{}
	events     events
}

// NewStore returns a store for the plan's clusters, all stopped.
func NewStore(p Plan) *Store {
	s := &Store{shardCount: p.ShardCount, total: p.Total, changed: make(chan struct{})}
	for _, c := range p.Clusters {
		cs := ClusterStatus{ID: c.ID, Shards: slices.Clone(c.Shards), State: ClusterStopped}
		for _, id := range c.Shards {
			cs.ShardState = append(cs.ShardState, wire.ShardStatus{ID: id, State: wire.ShardDown})
		}
		s.clusters = append(s.clusters, cs)
	}
	return s
}

// Changed returns a channel that is closed at the next change.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// update applies f to cluster id's status and wakes the waiters.
func (s *Store) update(id int, f func(*ClusterStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.clusters {
		if s.clusters[i].ID == id {
			f(&s.clusters[i])
			c := &s.clusters[i]
			if c.State == ClusterStarting || c.State == ClusterReady {
				c.State = ClusterStarting
				if c.ShardsReady() == len(c.Shards) {
					c.State = ClusterReady
				}
			}
			close(s.changed)
			s.changed = make(chan struct{})
			return
		}
	}
}

// Cluster returns a copy of one cluster's status.
func (s *Store) Cluster(id int) (ClusterStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clusters {
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
	snap := Snapshot{Time: time.Now(), ShardCount: s.shardCount, PlanClusters: s.total, Events: s.events.list()}
	for _, c := range s.clusters {
		snap.Clusters = append(snap.Clusters, cloneStatus(c))
		snap.Shards += len(c.Shards)
		snap.ShardsReady += c.ShardsReady()
		if c.Ready() {
			snap.ClustersReady++
		}
	}
	snap.Ready = len(s.clusters) > 0 && snap.ClustersReady == len(s.clusters)
	return snap
}

// setShards records a status report, keeping only the cluster's own shards
// (the channel has already refused a report naming others).
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
