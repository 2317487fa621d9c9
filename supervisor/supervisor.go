// Package supervisor is shardvisor's parent process: it runs one cluster
// process per group of shards, restarts those that crash or hang, paces
// their IDENTIFYs through one queue, and stops them all gracefully.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardvisor/shardvisor/internal/field"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/sessiondir"
)

// Config is a Supervisor's configuration.
type Config struct {
	Plan     Plan
	Launcher Launcher
	Policy   RestartPolicy
	// ShutdownTimeout is how long a stop waits for the processes to exit
	// after SIGTERM before it kills them.
	ShutdownTimeout time.Duration
	// ChildWatchdog is how long a process may stay silent on its channel
	// before it is killed and restarted.
	ChildWatchdog time.Duration
	// Token is handed to each child over its channel.
	Token secret.Token
	// Queue paces every child's IDENTIFYs.
	Queue identify.Acquirer
	// NoHandoff makes a rolling restart stop each process (its sessions
	// close) before it starts the new one, as before handoffs existed.
	NoHandoff bool
	// ResumeAfterCrash has every child report its sessions (never shown
	// anywhere) so that the replacement of a crashed one RESUMEs them
	// (crashresume.go): at least once, with an empty cache.
	ResumeAfterCrash bool
	// REST, if set, holds the bot's REST limits for every cluster: each
	// asks it for a ticket before each request (rest.go).
	REST *ratelimit.Limiter
	// RemoteREST, if set, is the REST limits service the supervisors on
	// several machines share: tickets are asked of it instead of REST,
	// which grants them only while the service fails (rest.go). It needs
	// REST.
	RemoteREST RemoteREST
	// Sessions, if set, is the session dir (-session-dir): a stop keeps
	// every shard's session and cache there, and a start resumes them
	// (sessiondir.go).
	Sessions *sessiondir.Dir
	// BudgetFactor, if set, stretches restart delays while the session
	// start budget runs low (identify.Queue.BackoffFactor).
	BudgetFactor func() float64
	// QueueStats, if set, is the local identify queue's state, for /status.
	QueueStats func() identify.Stats
	// Peers, if set, are the supervisors that run the plan's other
	// clusters: fleet calls for those are forwarded to them (peers.go).
	Peers *Peers
	// FleetSecret, if set, lets peers forward fleet calls to this
	// supervisor (POST /fleet/forward); without it they are refused.
	FleetSecret secret.Token

	// Resharding (reshard.go). Split is how the flags split the shards
	// into clusters (its Shards is the plan's): a reshard splits its new
	// count the same way. GatewayBot asks Discord for its recommended
	// shard count and the session starts left; without it a reshard is
	// refused. CheckPlan, if set, refuses a plan this machine cannot run.
	// AutoReshard makes a live shard's 4011 (sharding required) reshard
	// instead of stopping everything. ReshardTimeout bounds the wait for
	// the next fleet to be ready (0: DefaultReshardTimeout). OnReshard, if
	// set, is told the new plan after each switch (to remember it).
	Split          PlanConfig
	GatewayBot     func(context.Context) (GatewayBot, error)
	CheckPlan      func(Plan) error
	AutoReshard    bool
	ReshardTimeout time.Duration
	OnReshard      func(p Plan, reason string)
}

func (c *Config) validate() error {
	switch {
	case len(c.Plan.Clusters) == 0:
		return errors.New("supervisor: a plan without clusters")
	case c.Launcher == nil:
		return errors.New("supervisor: no launcher")
	case c.Queue == nil:
		return errors.New("supervisor: no identify queue")
	case c.Token.Empty():
		return errors.New("supervisor: no token")
	case c.ShutdownTimeout <= 0:
		return field.New("Config.ShutdownTimeout", fmt.Sprintf("%v, must be positive", c.ShutdownTimeout))
	case c.ChildWatchdog <= 0:
		return field.New("Config.ChildWatchdog", fmt.Sprintf("%v, must be positive", c.ChildWatchdog))
	case c.RemoteREST != nil && c.REST == nil:
		return field.New("Config.RemoteREST", "set without Config.REST, the limits it falls back on", "Config.REST")
	}
	return c.Policy.Validate()
}

// FatalError stops the supervisor when a cluster exits with status 78.
type FatalError struct {
	ClusterID int
	Message   string
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("cluster %d: fatal configuration error: %s", e.ClusterID, e.Message)
}

// IntensityError stops the supervisor when a cluster restarts more often
// than the restart policy allows.
type IntensityError struct {
	ClusterID   int
	MaxRestarts int
	Window      time.Duration
}

func (e *IntensityError) Error() string {
	return fmt.Sprintf("cluster %d: more than %d restarts within %v", e.ClusterID, e.MaxRestarts, e.Window)
}

// ErrUncleanStop is returned when some process had to be killed, or exited
// non-zero, during a stop.
var ErrUncleanStop = errors.New("not every cluster process stopped cleanly")

// Supervisor runs the plan's cluster processes.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	store    *Store
	fleet    *fleetRouter
	sessions *sessionRecords // nil without a session dir
	rest     *restLimits     // nil without REST tickets (rest.go)

	liveRoster atomic.Pointer[roster] // the fleet that serves the bot (roster.go)
	rosterMu   sync.Mutex
	rosters    []*roster       // the rosters a stop must stop
	spawn      chan *roster    // a reshard's next fleet, for the main loop to run
	loopDone   chan struct{}   // closed when the main loop ends
	reshards   *reshardMetrics // reshard.go

	stopOnce  sync.Once
	stopping  chan struct{} // closed when a graceful stop begins
	hurryOnce sync.Once
	hurry     chan struct{} // closed when the rest must be killed now

	rolling atomic.Bool
	wg      sync.WaitGroup // rolling restarts
	tick    atomic.Int64   // unix nanoseconds of the main loop's last turn
}

// New returns a supervisor. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Supervisor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Supervisor{cfg: cfg, log: logger, store: NewStore(cfg.Plan),
		stopping: make(chan struct{}), hurry: make(chan struct{}),
		spawn: make(chan *roster), loopDone: make(chan struct{}), reshards: newReshardMetrics()}
	live := newRoster(s, cfg.Plan, s.store.liveSet(), false)
	s.liveRoster.Store(live)
	s.rosters = []*roster{live}
	s.fleet = newFleetRouter(s)
	s.rest = newRESTLimits(cfg.REST, cfg.RemoteREST, logger.With("component", "rest"))
	if cfg.Sessions != nil {
		s.sessions = newSessionRecords(cfg.Sessions)
	}
	s.tick.Store(time.Now().UnixNano())
	return s, nil
}

// Store is the supervisor's status store.
func (s *Supervisor) Store() *Store { return s.store }

// Run starts every cluster process and keeps them running until ctx is done
// (a graceful stop), Stop is called, or a cluster must stop everything. It
// returns when every process has exited: nil if all stopped cleanly, a
// *FatalError, an *IntensityError, or ErrUncleanStop.
func (s *Supervisor) Run(ctx context.Context) error {
	if s.sessions != nil {
		if n := s.sessions.dir.Sweep(); n > 0 {
			s.sessions.outcomes.WithLabelValues(sessiondir.ReasonForeign).Add(float64(n))
			s.log.Warn("session records of shards beyond the plan discarded", "records", n)
		}
	}
	defer close(s.loopDone)
	results := make(chan runnerDone)
	left := 0
	runRoster := func(ro *roster) {
		left += len(ro.runners)
		for _, r := range ro.runners {
			go func() { results <- runnerDone{ro: ro, err: r.run()} }()
		}
	}
	runRoster(s.live())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var first error
	var hurryTimer <-chan time.Time
	// Each is taken once, then nil: a closed channel left in the select
	// would spin this loop until the last process exits.
	done, stopping := ctx.Done(), (<-chan struct{})(s.stopping)
	for left > 0 {
		s.tick.Store(time.Now().UnixNano())
		select {
		case d := <-results:
			left--
			switch {
			case d.err == nil:
			case d.ro != s.live():
				d.ro.fail(d.err) // a reshard's next fleet (or the old one): the reshard's to handle
			case first == nil:
				first = d.err
				s.Stop()
			}
		case ro := <-s.spawn:
			runRoster(ro)
		case <-done:
			done = nil
			s.Stop()
		case <-stopping:
			stopping = nil
			s.log.Info("stopping every cluster process", "shutdown_timeout", s.cfg.ShutdownTimeout)
			hurryTimer = time.After(s.cfg.ShutdownTimeout)
		case <-hurryTimer:
			s.Hurry()
			hurryTimer = nil
		case <-tick.C:
		}
	}
	s.wg.Wait()
	s.fleet.client.CloseIdleConnections() // to the peers
	if first != nil {
		return first
	}
	for _, r := range s.live().runners {
		if r.unclean {
			return ErrUncleanStop
		}
	}
	return nil
}

// Stop begins a graceful stop: SIGTERM to every process at once, then, after
// the shutdown timeout, SIGKILL to what is left. It does not wait; Run
// returns when everything has exited.
func (s *Supervisor) Stop() {
	s.stopOnce.Do(s.stopRosters)
}

// Hurry kills every remaining process now (a second SIGTERM or SIGINT).
func (s *Supervisor) Hurry() {
	s.Stop()
	s.hurryOnce.Do(func() {
		s.log.Warn("killing every remaining cluster process")
		close(s.hurry)
	})
}

func (s *Supervisor) isStopping() bool { return closed(s.stopping) }

// closed reports whether c is closed.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Healthy reports whether the main loop has turned within the last `within`.
func (s *Supervisor) Healthy(within time.Duration) bool {
	return time.Since(time.Unix(0, s.tick.Load())) < within
}

func (s *Supervisor) budgetFactor() float64 {
	if s.cfg.BudgetFactor == nil {
		return 1
	}
	return s.cfg.BudgetFactor()
}

// RollingRestart replaces the cluster processes one at a time, each with the
// binary now on disk, starting the next only once the previous is ready
// again. It returns at once; a rolling restart already under way, or a stop,
// makes it do nothing. It gives up if a new process exits before it is
// ready, leaving the remaining clusters on the old binary.
func (s *Supervisor) RollingRestart() {
	if s.isStopping() || !s.rolling.CompareAndSwap(false, true) {
		s.log.Info("rolling restart already under way or stopping; ignoring")
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.rolling.Store(false)
		start := time.Now()
		runners := s.live().runners
		s.log.Info("rolling restart begins", "clusters", len(runners))
		for _, r := range runners {
			if err := s.rollOne(r); err != nil {
				s.log.Error("rolling restart stopped", "cluster_id", r.cluster.ID, "err", err)
				return
			}
		}
		s.log.Info("rolling restart done", "took", time.Since(start).Round(time.Millisecond))
	}()
}

// rollOne restarts one cluster and waits until its new process is ready.
func (s *Supervisor) rollOne(r *runner) error {
	before, _ := s.store.Cluster(r.cluster.ID)
	reply := make(chan error, 1)
	select {
	case r.roll <- reply:
	case <-s.stopping:
		return errors.New("supervisor stopping")
	}
	select {
	case err := <-reply:
		if err != nil {
			return err
		}
	case <-s.stopping:
		return errors.New("supervisor stopping")
	}
	for {
		changed := s.store.Changed()
		c, _ := s.store.Cluster(r.cluster.ID)
		switch {
		case c.Generation > before.Generation+1:
			return fmt.Errorf("the new process exited before it was ready (%s)", c.LastExit.Status)
		case c.Generation > before.Generation && c.Ready():
			return nil
		case c.Generation > before.Generation && c.State != ClusterStarting:
			return fmt.Errorf("the new process is %s before it was ready", c.State)
		}
		select {
		case <-changed:
		case <-s.stopping:
			return errors.New("supervisor stopping")
		}
	}
}
