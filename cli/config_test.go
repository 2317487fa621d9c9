package cli

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/supervisor"
)

// TestSupervisorConfig runs the run mode's first step, flags to config, on
// bad values and their neighbours: each is refused with exit status 78
// and a message that names the flag; the good neighbours pass.
func TestSupervisorConfig(t *testing.T) {
	env := runEnv{stderr: io.Discard, getenv: func(k string) (string, bool) {
		if k == "DISCORD_TOKEN" {
			return secretToken, true
		}
		return "", false
	}}
	base := []string{"-max-concurrency", "1", "-metrics-addr", ""}
	for _, tc := range []struct {
		args []string
		want string // "" means accepted
	}{
		{[]string{"-shards", "8"}, ""},
		{[]string{"-shards", "0"}, "-shards"},
		{[]string{"-shards", "-4"}, "-shards"},
		{[]string{"-shards", "many"}, "-shards"},
		{[]string{"-shards", "99999999999999999999"}, "-shards"},
		{[]string{"-shards", "2097152"}, "-shards"},
		{[]string{"-shards", "99999", "-shards-per-cluster", "99999"}, "-shards-per-cluster: 99999 shards in one cluster; a cluster runs at most 4096"},
		{[]string{"-shards", "8192", "-clusters", "1"}, "-clusters: 8192 shards in one cluster"},
		{[]string{"-shards", "4096", "-shards-per-cluster", "4096", "-cluster-ids", "0"}, ""},
		{[]string{"-shards", "8", "-shards-per-cluster", "0"}, "-shards-per-cluster"},
		{[]string{"-shards", "8", "-shards-per-cluster", "-1"}, "-shards-per-cluster"},
		{[]string{"-shards", "8", "-clusters", "-1"}, "-clusters"},
		{[]string{"-metrics-addr", "not:an:addr"}, "-metrics-addr"},
		{[]string{"-metrics-addr", "::::"}, "-metrics-addr"},
		{[]string{"-metrics-addr", "127.0.0.1:99999"}, "-metrics-addr"},
		{[]string{"-metrics-addr", "127.0.0.1:-1"}, "-metrics-addr"},
		{[]string{"-metrics-addr", "127.0.0.1"}, "-metrics-addr"},
		{[]string{"-metrics-addr", "bad host!:80"}, "-metrics-addr"},
		{[]string{"-metrics-addr", "127.0.0.1:0"}, ""},
		{[]string{"-metrics-addr", "[::1]:9851"}, ""},
		{[]string{"-metrics-addr", "localhost:http"}, ""},
		{[]string{"-metrics-addr", ":9851"}, ""},
		{[]string{"-identify-queue-listen", "nope:nope:nope"}, "-identify-queue-listen"},
		{[]string{"-identify-queue-listen", "0.0.0.0:65536"}, "-identify-queue-listen"},
		{[]string{"-api-url", "http://127.0.0.1:99999"}, "-api-url"},
		{[]string{"-api-url", "http://127.0.0.1:0"}, "-api-url"},
		{[]string{"-api-url", "discord.com"}, "-api-url"},
		{[]string{"-identify-queue-url", "nope"}, "-identify-queue-url"},
		{[]string{"-rest-limits-url", "nope"}, "-rest-limits-url"},
		{[]string{"-rest-limits-url", "ftp://queue:9852"}, "-rest-limits-url"},
		{[]string{"-rest-limits-url", "http://queue:9852", "-rest-shared-limits=false"}, "-rest-limits-url and -rest-shared-limits=false both set"},
		{[]string{"-rest-limits-url", "http://queue:9852"}, ""},
		{[]string{"-rest-limits-url", "https://queue.internal/limits"}, ""},
		{[]string{"-shards", "8", "-session-dir", "config_test.go"}, "-session-dir \"config_test.go\": not a directory"},
		{[]string{"-shards", "8", "-session-dir", "testdata-none/sessions"}, ""}, // made at build
		{[]string{"-shards", "8", "-session-resume-window", "0"}, "-session-resume-window"},
		{[]string{"-shards", "8", "-session-resume-window", "-1s"}, "-session-resume-window"},
		{[]string{"-shards", "8", "-session-resume-window", "soon"}, "-session-resume-window"},
		{[]string{"-shards", "8", "-session-resume-window", "1ns"}, ""},
		{[]string{"-max-concurrency", "-1"}, "-max-concurrency"},
		{[]string{"-max-concurrency", "99999999"}, "-max-concurrency"},
		{[]string{"-max-concurrency", "x"}, "-max-concurrency"},
		{[]string{"-identify-interval", "0s"}, "-identify-interval"},
		{[]string{"-identify-interval", "-5s"}, "-identify-interval"},
		{[]string{"-session-start-reserve", "-1"}, "-session-start-reserve"},
		{[]string{"-session-start-reserve", "1e9"}, "-session-start-reserve"},
		{[]string{"-session-start-reserve", "0"}, ""},
		{[]string{"-scrape-timeout", "0s"}, "-scrape-timeout"},
		{[]string{"-scrape-reuse", "2s"}, "-scrape-reuse"},
		{[]string{"-scrape-reuse", "-1ms"}, "-scrape-reuse"},
		{[]string{"-scrape-reuse", "0"}, ""},
		{[]string{"-scrape-reuse", "1s"}, ""},
		{[]string{"-shutdown-timeout", "-1s"}, "-shutdown-timeout"},
		{[]string{"-child-watchdog", "0s"}, "-child-watchdog"},
		{[]string{"-identify-queue-slack", "-1s"}, "-identify-queue-slack"},
		{[]string{"-reap-orphans", "sometimes"}, "-reap-orphans"},
		{[]string{"-restart-delay", "-1s"}, "-restart-delay"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append(append([]string{}, base...), tc.args...)
			if !strings.Contains(strings.Join(tc.args, " "), "-shards ") {
				args = append(args, "-shards", "8")
			}
			_, err := supervisorConfig(args, env)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || ExitCode(err) != ExitFatalConfig || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (exit %d), want exit 78 naming %q", err, ExitCode(err), tc.want)
			}
			if strings.Contains(err.Error(), secretToken) {
				t.Errorf("the token is in the error")
			}
		})
	}
}

// TestPlanLimits is the plan checked against Discord's session start
// limit and this machine's limits.
func TestPlanLimits(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	budget := &identify.Budget{Total: 1000, Remaining: 900, ResetAt: time.Now().Add(time.Hour)}
	for _, tc := range []struct {
		name    string
		shards  int
		per     int
		ids     []int
		budget  *identify.Budget
		machine machine
		want    string
	}{
		{"fits", 64, 8, nil, budget, machine{}, ""},
		{"more shards than the limit could ever start", 99999, 5, nil, budget, machine{}, "-shards 99999: more shards than Discord's session start limit of 1000"},
		{"the same on one cluster of it", 99999, 5, []int{0}, budget, machine{}, "-shards 99999"},
		{"as many shards as the limit", 1000, 10, nil, budget, machine{}, ""},
		{"budget unknown", 99999, 5, []int{0}, nil, machine{}, ""},
		{"more clusters than processes", 64, 1, nil, nil, machine{procs: 64}, "RLIMIT_NPROC"},
		{"more than descriptors", 64, 1, nil, nil, machine{files: 128}, "RLIMIT_NOFILE"},
		{"more than memory", 64, 1, nil, nil, machine{memory: 512 << 20}, "MiB"},
		{"machine roomy enough", 64, 1, nil, nil, machine{procs: 1000, files: 1024, memory: 4 << 30}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := supervisor.NewPlan(supervisor.PlanConfig{Shards: tc.shards, ShardsPerCluster: tc.per, ClusterIDs: tc.ids})
			if err != nil {
				t.Fatal(err)
			}
			err = checkPlanLimits(plan, "-shards-per-cluster", tc.budget, tc.machine, log)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || ExitCode(err) != ExitFatalConfig || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want exit 78 with %q", err, tc.want)
			}
		})
	}
}

// Issue 10's cases end to end: the plan refused before any cluster starts,
// and a REST failure naming the address really dialled.
func TestHostileRunRefusedBeforeStart(t *testing.T) {
	fake := newFake(t, discordtest.Options{Shards: 4})
	tok := []string{"DISCORD_TOKEN=" + secretToken}
	out, code := command(t, tok, "run", "-shards", "99999", "-shards-per-cluster", "4000", "-api-url", fake.URL(), "-metrics-addr", "")
	if code != 78 || !strings.Contains(out, "-shards 99999") || strings.Contains(out, "cluster process started") {
		t.Errorf("-shards 99999: exit %d:\n%s", code, out)
	}
	if n := len(fake.Record().Identifies); n != 0 {
		t.Errorf("%d IDENTIFYs for a refused plan", n)
	}
	out, code = command(t, tok, "run", "-shards", "4", "-api-url", "http://127.0.0.1:1", "-metrics-addr", "")
	if code != 1 || !strings.Contains(out, "http://127.0.0.1:1/api/") || strings.Contains(out, "discord.com") {
		t.Errorf("unreachable -api-url: exit %d:\n%s", code, out)
	}
}

// Signals are taken before the slow startup calls: a SIGHUP while GET
// /gateway/bot hangs is ignored (it used to kill the process), and a
// SIGTERM then stops it cleanly.
func TestSignalsDuringStartup(t *testing.T) {
	asked := make(chan struct{}, 1)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}))
	defer hang.Close()
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken}, "run", "-shards", "4", "-api-url", hang.URL, "-metrics-addr", "")
	select {
	case <-asked:
	case <-time.After(patience):
		t.Fatal("GET /gateway/bot never came")
	}
	p.signal(t, syscall.SIGHUP)
	if !p.out.WaitFor("SIGHUP during startup", patience) {
		t.Fatalf("the SIGHUP is not logged:\n%s", p.out)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGHUP then SIGTERM during startup:\n%s", code, p.out)
	}
	if out := p.out.String(); !strings.Contains(out, "stopped during startup") {
		t.Errorf("the signals are not logged:\n%s", out)
	}
}

// TestFlagDefaultsAreTheLibraries': the run mode's flags start from the
// libraries' own defaults (cluster.Defaults, supervisor.DefaultRestartPolicy),
// written once, so that a cluster configured from default flags is the
// cluster SetDefaults makes.
func TestFlagDefaultsAreTheLibraries(t *testing.T) {
	env := runEnv{stderr: io.Discard, getenv: func(k string) (string, bool) {
		if k == "DISCORD_TOKEN" {
			return secretToken, true
		}
		return "", false
	}}
	cfg, err := supervisorConfig([]string{"-shards", "4", "-max-concurrency", "1", "-metrics-addr", ""}, env)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.flags.policy, supervisor.DefaultRestartPolicy(); got != want {
		t.Errorf("restart policy from default flags %+v, want %+v", got, want)
	}
	got := cfg.flags.gateway.clusterConfig(cfg.gw, cluster.Identity{ShardIDs: []int{0}, ShardCount: 1})
	got.SetDefaults()
	want := cluster.Defaults()
	for _, d := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ShardConnectTimeout", got.ShardConnectTimeout, want.ShardConnectTimeout},
		{"GuildReadyTimeout", got.GuildReadyTimeout, want.GuildReadyTimeout},
		{"MinInvalidSessionWait", got.MinInvalidSessionWait, want.MinInvalidSessionWait},
		{"MaxInvalidSessionWait", got.MaxInvalidSessionWait, want.MaxInvalidSessionWait},
		{"ReconnectDelay", got.ReconnectDelay, want.ReconnectDelay},
		{"MaxReconnectDelay", got.MaxReconnectDelay, want.MaxReconnectDelay},
		{"StatusInterval", got.StatusInterval, want.StatusInterval},
		{"CloseTimeout", got.CloseTimeout, want.CloseTimeout},
	} {
		if d.got != d.want {
			t.Errorf("%s from default flags %v, cluster.Defaults %v", d.name, d.got, d.want)
		}
	}
}
