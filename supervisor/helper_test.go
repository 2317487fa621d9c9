package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// The test binary plays three more roles, chosen by SV_TEST_ROLE, in the
// manner of the os/exec tests: a cluster process that speaks the channel
// protocol as SV_TEST_CHILD scripts it, a whole supervisor (for kill -9 and
// PID 1 tests), and a grandchild that a cluster leaves behind.
func TestMain(m *testing.M) {
	switch os.Getenv("SV_TEST_ROLE") {
	case "child":
		os.Exit(fakeChild())
	case "supervisor":
		os.Exit(helperSupervisor())
	case "daemonize": // start a grandchild in its own session and leave it
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), "SV_TEST_ROLE=grandchild")
		gc.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := gc.Start(); err != nil {
			os.Exit(1)
		}
		event("grandchild %d", gc.Process.Pid)
		os.Exit(0)
	case "grandchild":
		time.Sleep(100 * time.Millisecond) // outlive the parent that left it, then exit
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// behaviour returns what SV_TEST_CHILD says this cluster does: a list of
// "ID=behaviour" or a bare default ("well" if unset).
func behaviour(clusterID int) string {
	def := "well"
	for part := range strings.SplitSeq(os.Getenv("SV_TEST_CHILD"), ",") {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case !ok && part != "":
			def = part
		case ok && k == strconv.Itoa(clusterID):
			return v
		}
	}
	return def
}

// event appends one line to $SV_TEST_DIR/events.
func event(format string, args ...any) {
	dir := os.Getenv("SV_TEST_DIR")
	if dir == "" {
		return
	}
	f, err := os.OpenFile(dir+"/events", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", args...)
}

// once reports whether this is the first time name was asked for in
// $SV_TEST_DIR (used for "crash the first time only").
func once(name string) bool {
	f, err := os.OpenFile(os.Getenv("SV_TEST_DIR")+"/once-"+name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func fakeChild() int {
	id, _ := strconv.Atoi(os.Getenv(wire.EnvClusterID))
	shards, err := ParseIDs(wire.EnvShardIDs, os.Getenv(wire.EnvShardIDs))
	if err != nil || os.Getenv(wire.EnvChannelFD) != "3" {
		fmt.Fprintln(os.Stderr, "fake child: bad identity", err)
		return 78
	}
	if os.Getenv("DISCORD_TOKEN") != "" || os.Getenv("NOTIFY_SOCKET") != "" {
		fmt.Fprintln(os.Stderr, "fake child: inherited the token or the notify socket")
		return 70
	}
	nc, err := wire.FileConn(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake child:", err)
		return 70
	}
	conn := wire.NewConn(nc, 5*time.Second)
	m, err := conn.Read()
	w, ok := m.(*wire.Welcome)
	if err != nil || !ok || w.Token.Reveal() != "test-token" {
		fmt.Fprintln(os.Stderr, "fake child: no welcome", err)
		return 70
	}
	b := behaviour(id)
	// "handoff" behaviours take part in handoffs: a replacement reports
	// its shards down until the handoff ended.
	handoff := strings.HasPrefix(b, "handoff")
	var handed atomic.Bool
	handed.Store(!w.Handoff || !handoff) // a child that takes no handoffs ignores the flag
	event("start %d %d %d %s", id, os.Getpid(), time.Now().UnixNano(), b)
	event("welcome %d %d shadow=%v count=%s", id, os.Getpid(), w.Shadow, os.Getenv(wire.EnvShardCount))
	if b == "crash-in-shadow" && w.Shadow {
		return 3
	}
	term := make(chan os.Signal, 1)
	if b == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	conn.Write(&wire.Hello{ClusterID: id, PID: os.Getpid(), ShardIDs: shards, Handoff: handoff, Shadow: b != "no-shadow"})
	ready := func() *wire.Status {
		st := &wire.Status{}
		state := wire.ShardReady
		if !handed.Load() || (w.Shadow && b == "handoff-stuck-in-shadow") {
			state = wire.ShardDown
		}
		for _, s := range shards {
			st.Shards = append(st.Shards, wire.ShardStatus{ID: s, State: state, Since: time.Now(), Guilds: 1})
		}
		return st
	}
	switch b {
	case "fatal":
		conn.Write(&wire.Fatal{Shard: shards[0], Code: 4014, Reason: "disallowed intents"})
		return 78
	case "fatal-4011-once":
		if once(fmt.Sprint("4011-", id)) {
			conn.Write(&wire.Fatal{Shard: shards[0], Code: 4011, Reason: "sharding required"})
			return 78
		}
	case "crash":
		return 3
	case "crash-once":
		if once(fmt.Sprint("crash-", id)) {
			return 3
		}
	case "garbage":
		nc.Write([]byte("this is not a frame at all, just bytes on the wire"))
	case "flood":
		for {
			if err := conn.Write(ready()); err != nil {
				return 0
			}
		}
	case "foreign-shard":
		conn.Write(&wire.Status{Shards: []wire.ShardStatus{{ID: 9999, State: wire.ShardReady}}})
	case "orphan":
		// A double fork, as daemons do: the grandchild's parent exits at
		// once, so the grandchild is re-parented to PID 1 (the supervisor,
		// in a container) and only PID 1 can reap it when it exits.
		d := exec.Command(os.Args[0])
		d.Env = append(os.Environ(), "SV_TEST_ROLE=daemonize")
		if err := d.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "fake child: daemonize:", err)
		}
	}
	eof := make(chan struct{})
	go func() { // answer metrics requests; EOF means the supervisor is gone
		defer close(eof)
		for {
			m, err := conn.Read()
			if err != nil {
				return
			}
			switch m.(type) {
			case *wire.HandoffRequest, *wire.HandoffShard, *wire.HandoffEnd, *wire.HandoffAbort:
				if !handoff { // as a binary from before handoffs, which knows no such type
					event("breach %d %d %s", id, os.Getpid(), m.Type())
					os.Exit(70)
				}
			}
			switch m := m.(type) {
			case *wire.MetricsRequest:
				if b != "slow-metrics" {
					conn.Write(&wire.Metrics{ID: m.ID, Data: []byte("metrics of " + strconv.Itoa(id))})
				}
			case *wire.HandoffRequest:
				event("freeze %d %d", id, os.Getpid())
				seq := int64(5) // 6 from a process started in shadow
				if w.Shadow {
					seq = 6
				}
				for _, s := range shards {
					conn.Write(&wire.HandoffShard{Shard: s, SessionID: mustToken("session-" + strconv.Itoa(s)), Seq: seq, Snapshot: []byte("state"), More: true})
					conn.Write(&wire.HandoffShard{Shard: s, Snapshot: []byte(" of " + strconv.Itoa(s))})
				}
				conn.Write(&wire.HandoffEnd{Shards: len(shards)})
			case *wire.HandoffAbort:
				event("abort %d %d", id, os.Getpid())
			case *wire.Live:
				event("live %d %d", id, os.Getpid())
			case *wire.HandoffShard:
				if m.SessionID.Reveal() != "" {
					event("got %d %d %d %s", id, os.Getpid(), m.Shard, m.SessionID.Reveal())
				}
			case *wire.HandoffEnd:
				event("handed %d %d", id, os.Getpid())
				if b == "handoff-crash-after" {
					os.Exit(3)
				}
				handed.Store(true)
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	for {
		if b != "silent" {
			conn.Write(ready())
		}
		select {
		case <-tick.C:
		case <-term:
			event("term %d %d", id, os.Getpid())
			return 0
		case <-eof:
			event("eof %d %d", id, os.Getpid())
			return 0
		}
	}
}

func mustToken(v string) secret.Token {
	t, err := secret.NewToken(v)
	if err != nil {
		panic(err)
	}
	return t
}

// helperConfig is the helper supervisor's configuration, passed as JSON in
// SV_TEST_SUPERVISOR.
type helperConfig struct {
	Clusters       int
	Reap           bool
	ExitWhenReaped bool // PID 1 test: stop once an orphan was reaped and cluster 1 exited 3
}

// helperSupervisor runs a whole supervisor in this process and prints one
// line of JSON per notable event on stdout.
func helperSupervisor() int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(os.Getenv("SV_TEST_SUPERVISOR")), &hc); err != nil {
		fmt.Fprintln(os.Stderr, "helper supervisor:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var reaper *Reaper
	if hc.Reap {
		reaper = NewReaper(logger)
	}
	s, err := newTestSupervisor(hc.Clusters, reaper, logger, func(c *Config) { c.ShutdownTimeout = 5 * time.Second })
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper supervisor:", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	out := json.NewEncoder(os.Stdout)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if reaper != nil {
		go reaper.Run(ctx, 100*time.Millisecond)
	}
	for {
		changed := s.Store().Changed()
		snap := s.Store().Snapshot()
		out.Encode(map[string]any{"pid": os.Getpid(), "snapshot": snap, "reaped": reaperCount(reaper), "zombies": zombies()})
		if hc.ExitWhenReaped && reaper.Reaped() > 0 && len(snap.Clusters) > 1 && snap.Clusters[1].LastExit != nil &&
			snap.Clusters[1].LastExit.Code == 3 && snap.Ready {
			syscall.Kill(os.Getpid(), syscall.SIGTERM) // as PID 1: only delivered because we handle it
			hc.ExitWhenReaped = false
		}
		select {
		case err := <-done:
			out.Encode(map[string]any{"done": fmt.Sprint(err), "zombies": zombies()})
			if err != nil {
				return 1
			}
			return 0
		case <-changed:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func reaperCount(r *Reaper) int {
	if r == nil {
		return 0
	}
	return r.Reaped()
}

// zombies lists zombie processes visible in /proc.
func zombies() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if pid, state, _, ok := parseStat(b); ok && state == 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// newTestSupervisor builds a supervisor whose children are this test binary
// in the "child" role, with short delays.
func newTestSupervisor(clusters int, reaper *Reaper, logger *slog.Logger, mod ...func(*Config)) (*Supervisor, error) {
	plan, err := NewPlan(PlanConfig{Shards: clusters * 2, ShardsPerCluster: 2})
	if err != nil {
		return nil, err
	}
	q, err := identify.New(identify.Config{MaxConcurrency: 1, Interval: 10 * time.Millisecond}, nil, nil)
	if err != nil {
		return nil, err
	}
	tok, _ := secret.NewToken("test-token")
	cfg := Config{
		Plan: plan,
		Launcher: &ExecLauncher{
			Args: []string{"cluster"},
			Environ: func() []string {
				return append(os.Environ(), "SV_TEST_ROLE=child", "DISCORD_TOKEN=leak", "NOTIFY_SOCKET=/nope")
			},
			Reaper: reaper,
		},
		Policy:          RestartPolicy{Delay: 20 * time.Millisecond, MaxDelay: time.Second, Stable: time.Minute, Jitter: 0.1},
		ShutdownTimeout: 10 * time.Second,
		ChildWatchdog:   10 * time.Second,
		Token:           tok,
		Queue:           q,
	}
	for _, f := range mod {
		f(&cfg)
	}
	return New(cfg, logger)
}
