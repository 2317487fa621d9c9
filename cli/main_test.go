package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"go.uber.org/goleak"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// The test binary is shardvisor too: with SHARDVISOR_TEST_MAIN=1 it runs
// the command line (the supervisor, and the clusters it re-executes) with
// the bot of cmd/shardvisor, plus the fleet requests and command of
// fleet_test.go.
func TestMain(m *testing.M) {
	if os.Getenv("SHARDVISOR_TEST_MAIN") == "1" {
		// A cluster process exits 1 at once while the file this names
		// exists: a broken binary for the rolling restart's tests.
		if f := os.Getenv("SHARDVISOR_TEST_BROKEN_FILE"); f != "" && len(os.Args) > 1 && os.Args[1] == "cluster" {
			if _, err := os.Stat(f); err == nil {
				os.Exit(1)
			}
		}
		bot := cluster.NewBot()
		bot.Command(cluster.Ping())
		bot.Command(cluster.StatsCommand())
		bot.Command(cluster.ShardCommand())
		addFleetTestBot(bot)
		addFleetBenchCommand(bot)
		bot.Command(stateCommand())
		// A replacement that takes a handoff and dies right after its
		// first RESUMED, once, while the file this names exists.
		if f := os.Getenv("SHARDVISOR_TEST_CRASH_FILE"); f != "" {
			bot.Handle(func(*discordgo.Session, *discordgo.Resumed) {
				if os.Remove(f) == nil {
					os.Exit(3)
				}
			})
		}
		// Every dispatch the handlers see, as "shard seq type" lines
		// appended to the file this names: the proof that a handoff loses
		// no event and delivers none twice (seqsSeen).
		if f := os.Getenv("SHARDVISOR_TEST_EVENTS_FILE"); f != "" && len(os.Args) > 1 && os.Args[1] == "cluster" {
			out, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				panic(err)
			}
			bot.Handle(func(s *discordgo.Session, e *discordgo.Event) {
				if e.Sequence > 0 {
					fmt.Fprintf(out, "%d %d %s\n", s.ShardID, e.Sequence, e.Type)
				}
			})
			// Which fleet handled each guild's GUILD_CREATE (reshard_test.go).
			bot.Handle(func(s *discordgo.Session, g *discordgo.GuildCreate) {
				s.State.RLock()
				id := g.ID
				s.State.RUnlock()
				fmt.Fprintf(out, "guild %s %d %d\n", id, s.ShardCount, s.ShardID)
			})
		}
		// Every shard sends REST requests as fast as its limiter lets it:
		// messages to the channel this names, and GET users/@me (only the
		// global limit), once the file it names after a space exists
		// (restFlood).
		if spec := os.Getenv("SHARDVISOR_TEST_REST_FLOOD"); spec != "" && len(os.Args) > 1 && os.Args[1] == "cluster" {
			channel, start, _ := strings.Cut(spec, " ")
			restFlood(bot, channel, start)
		}
		os.Exit(Run(os.Args[1:], bot, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// stateCommand is /state: what the shard's State holds, so that tests can
// compare it across processes. It panics (and does not answer) if the
// State has no user, as a handler reading s.State.User.ID would.
func stateCommand() (*discordgo.ApplicationCommand, cluster.CommandFunc) {
	return &discordgo.ApplicationCommand{Name: "state", Description: "What the State holds"},
		func(i *cluster.Interaction) error {
			st := i.Session.State
			st.RLock()
			user := st.User.ID
			guilds, channels, roles := len(st.Guilds), 0, 0
			for _, g := range st.Guilds {
				channels += len(g.Channels)
				roles += len(g.Roles)
			}
			st.RUnlock()
			return i.Reply(fmt.Sprintf("user=%s guilds=%d channels=%d roles=%d pid=%d", user, guilds, channels, roles, os.Getpid()))
		}
}

// patience bounds every wait on an event, for a busy 2-core machine with
// the race detector in every process.
const patience = harness.Patience

// The fake's identify interval and measurement slack (see cluster's tests).
const (
	interval  = 50 * time.Millisecond
	tolerance = 15 * time.Millisecond
)

// secretToken is distinctive so that a leak anywhere is found by grep.
const secretToken = "MTA5OTk5.SeCrEtToKeN.xyzzy"

func newFake(t *testing.T, o discordtest.Options) *discordtest.Server {
	t.Helper()
	if o.IdentifyInterval == 0 {
		o.IdentifyInterval, o.IdentifyTolerance = interval, tolerance
	}
	if o.Token == "" {
		o.Token = secretToken
	}
	o.Logger = slog.New(slog.DiscardHandler)
	fake, err := discordtest.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	return fake
}

type proc struct {
	cmd  *exec.Cmd
	addr string
	out  *harness.Buffer
	done chan struct{}
	code int
}

func freeAddr(t testing.TB) string { return harness.FreeAddr(t) }

// shardvisor starts this binary as shardvisor with args; env is added to
// the test's environment. The process is killed at the end of the test if
// it still runs, and its output shown if the test failed.
func shardvisor(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &harness.Buffer{}, done: make(chan struct{})}
	for i, a := range args {
		if a == "-metrics-addr" && i+1 < len(args) {
			p.addr = args[i+1]
		}
	}
	// nice: the fake in this process plays Discord, which has CPUs of its
	// own. On two shared cores, with the race detector everywhere, it would
	// otherwise read frames late and measure IDENTIFYs closer together than
	// they were sent. shardvisor at a lower priority is only harder on it.
	// (nice execs the command: the pid is shardvisor's.)
	p.cmd = exec.Command("nice", append([]string{"-n", "10", os.Args[0]}, args...)...)
	p.cmd.Env = append(append(os.Environ(), "SHARDVISOR_TEST_MAIN=1"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.out)
		}
	})
	return p
}

// command runs this binary as shardvisor once with args and returns its
// combined output and exit status.
func command(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "SHARDVISOR_TEST_MAIN=1"), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("shardvisor %v did not exit: %s", args, out)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("shardvisor %v: %v", args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(patience):
		t.Fatalf("shardvisor did not exit; output:\n%s", p.out)
		return -1
	}
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// get fetches path from the supervisor's HTTP endpoint.
func (p *proc) get(path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// until polls the supervisor's status until cond holds: its HTTP endpoint
// has no event stream, so this waits for the state with a generous deadline.
func (p *proc) until(t *testing.T, what string, cond func(supervisor.Snapshot) bool) supervisor.Snapshot {
	t.Helper()
	deadline := time.Now().Add(patience)
	var last supervisor.Snapshot
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("waiting for %s: shardvisor exited with %d", what, p.code)
		default:
		}
		if code, body, err := p.get("/status"); err == nil && code == 200 {
			var s supervisor.Snapshot
			if json.Unmarshal([]byte(body), &s) == nil {
				last = s
				if cond(s) {
					return s
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: not within %v; last status %s", what, patience, last.Summary())
	return last
}

func ready(s supervisor.Snapshot) bool { return s.Ready }

// checkPacing fails if an IDENTIFY came sooner after its bucket's last
// than the fake allows (interval less its measurement slack) or a shard
// ever had two live sessions, across every process that ever ran.
func checkPacing(t *testing.T, r discordtest.Record) {
	t.Helper()
	if err := harness.CheckPacing(r); err != nil {
		t.Error(err)
		t0 := r.Identifies[0].At
		for _, id := range r.Identifies {
			t.Logf("identify shard %d bucket %d conn %d at +%v outcome %s", id.Shard, id.Bucket, id.Conn, id.At.Sub(t0).Round(100*time.Microsecond), id.Outcome)
		}
	}
	t.Logf("%d IDENTIFYs; most live sessions of one shard %d", len(r.Identifies), r.MaxLive)
}

// noLeak fails if the token appears in s.
func noLeak(t *testing.T, where, s string) {
	t.Helper()
	if strings.Contains(s, "SeCrEtToKeN") {
		t.Errorf("the token appears in %s", where)
	}
}

func procFile(pid int, name string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// fastFlags make a supervisor quick to start and restart in tests. Every
// scrape asks the clusters (-scrape-reuse 0): a test reads a counter right
// after what it counts, and a scrape reused from before would miss it.
func fastFlags(fake *discordtest.Server, addr string) []string {
	return []string{"-api-url", fake.URL(), "-metrics-addr", addr, "-identify-interval", interval.String(),
		"-restart-delay", "50ms", "-reconnect-delay", "50ms", "-invalid-session-wait", "100ms", "-log-level", "debug",
		"-scrape-reuse", "0"}
}
