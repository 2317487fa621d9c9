package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shardvisor/shardvisor/cli"
	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// The test binary is shardvisor too: with SHARDVISOR_TEST_MAIN=1 it runs
// the command line (the supervisor, and the clusters it re-executes) with
// the /ping bot, as cmd/shardvisor does.
func TestMain(m *testing.M) {
	if os.Getenv("SHARDVISOR_TEST_MAIN") == "1" {
		bot := cluster.NewBot()
		bot.Command(cluster.Ping())
		os.Exit(cli.Run(os.Args[1:], bot, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// patience bounds every wait on an event, for a busy 2-core machine with
// the race detector in every process.
const patience = harness.Patience

// need returns the path of a binary of Debian's prometheus package. It
// skips the test when the binary is absent, except in CI (CI set), which
// installs the package (.ci/run) and must run the test.
func need(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found in CI: .ci/run installs Debian's prometheus package, which must provide it: %v", name, err)
	}
	t.Skipf("%s not found: install Debian's prometheus package (apt-get install prometheus) to run this test", name)
	return ""
}

func freeAddr(t testing.TB) string { return harness.FreeAddr(t) }

// process is a child process of the test, stopped at the end of the test:
// SIGTERM, then SIGKILL if it has not exited within patience.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *harness.Buffer
	done chan struct{}
}

func start(t testing.TB, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, out: &harness.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.out)
		}
	})
	return p
}

// stop ends the process gracefully and waits for it; idempotent.
func (p *process) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(patience):
		t.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, patience)
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// httpGet fetches url with client and returns the body of a 200 answer;
// header is pairs of a request header's name and value.
func httpGet(ctx context.Context, client *http.Client, url string, header ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("get %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

// newClient returns an HTTP client whose idle connections are closed at
// the end of the test (goleak would see their goroutines).
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// bot is a fake Discord and a real supervisor running real cluster
// processes against it.
type bot struct {
	fake   *discordtest.Server
	sup    *process
	addr   string // the supervisor's -metrics-addr
	client *http.Client

	mu   sync.Mutex
	pids map[int]bool // every cluster process /status showed
}

// startBot starts a fake Discord with o and a supervisor of shards shards
// in clusters clusters against it, and waits until every shard is ready.
// At the end of the test the supervisor is stopped with SIGTERM and the
// test fails if any cluster process it ran outlives it.
func startBot(t testing.TB, o discordtest.Options, shards, clusters int, extra ...string) *bot {
	t.Helper()
	o.Shards = shards
	if o.IdentifyInterval == 0 {
		o.IdentifyInterval, o.IdentifyTolerance = 50*time.Millisecond, 15*time.Millisecond
	}
	o.Logger = slog.New(slog.DiscardHandler)
	fake, err := discordtest.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	b := &bot{fake: fake, addr: freeAddr(t), client: newClient(t), pids: map[int]bool{}}
	args := append([]string{"run", "-api-url", fake.URL(), "-metrics-addr", b.addr,
		"-shards", fmt.Sprint(shards), "-clusters", fmt.Sprint(clusters),
		"-identify-interval", o.IdentifyInterval.String(), "-restart-delay", "50ms",
		"-reconnect-delay", "50ms", "-invalid-session-wait", "100ms", "-log-level", "info"}, extra...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SHARDVISOR_TEST_MAIN=1", "DISCORD_TOKEN="+fake.Token())
	t.Cleanup(func() { // runs after the supervisor's own cleanup has stopped it
		b.mu.Lock()
		defer b.mu.Unlock()
		for pid := range b.pids {
			b.gone(t, pid)
		}
	})
	b.sup = start(t, "shardvisor run", cmd)
	b.until(t, "every shard ready", func(s supervisor.Snapshot) bool { return s.Ready })
	return b
}

// gone fails the test if process pid still exists after patience.
func (b *bot) gone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cluster process %d outlived the supervisor (kill(0): %v)", pid, err)
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// status reads the supervisor's /status.
func (b *bot) status(ctx context.Context) (supervisor.Snapshot, error) {
	var s supervisor.Snapshot
	body, err := httpGet(ctx, b.client, "http://"+b.addr+"/status")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("decode /status: %w", err)
	}
	b.mu.Lock()
	for _, c := range s.Clusters {
		if c.PID != 0 {
			b.pids[c.PID] = true
		}
	}
	b.mu.Unlock()
	return s, nil
}

// until polls /status until cond holds: the endpoint has no event stream,
// so this waits for the state with a generous deadline.
func (b *bot) until(t testing.TB, what string, cond func(supervisor.Snapshot) bool) supervisor.Snapshot {
	t.Helper()
	deadline := time.Now().Add(patience)
	var last supervisor.Snapshot
	var lastErr error
	for time.Now().Before(deadline) {
		if b.sup.exited() {
			t.Fatalf("waiting for %s: the supervisor exited: %v", what, b.sup.cmd.ProcessState)
		}
		s, err := b.status(context.Background())
		if err == nil {
			last = s
			if cond(s) {
				return s
			}
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: not within %v; last status %s (%v)", what, patience, last.Summary(), lastErr)
	return last
}

// scrape returns one answer of the supervisor's /metrics, as Prometheus'
// text format.
func (b *bot) scrape(ctx context.Context) ([]byte, error) {
	return httpGet(ctx, b.client, "http://"+b.addr+"/metrics")
}

// ping sends /ping in a guild of every shard and checks the replies.
func (b *bot) ping(t testing.TB, shards int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for shard := range shards {
		g := b.fake.GuildIDsOf(shard, shards)[0]
		if rep, err := b.fake.Interact(ctx, discordtest.Interaction{GuildID: g, Command: "ping"}); err != nil || rep.Content != "Pong!" {
			t.Fatalf("/ping on shard %d: %+v, %v", shard, rep, err)
		}
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
