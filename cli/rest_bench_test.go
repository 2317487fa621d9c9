package cli

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// BenchmarkRESTLimits runs 8 clusters of 2 shards (this test binary as
// shardvisor, with its flood: every shard posting messages to one channel
// and asking GET users/@me as fast as its limiter lets it) against the
// fake's limits, the global 50/s and messages 10 per 500 ms per channel,
// for 30 s, once with the supervisor holding the limits
// (-rest-shared-limits, the default) and once without (each cluster
// limits its own requests), and reports for each: requests answered per
// second against the global limit (ok/s and ok/global), and 429s.
func BenchmarkRESTLimits(b *testing.B) {
	const global, load = 50, 30 * time.Second
	for _, mode := range []struct{ name, flag string }{{"shared", "-rest-shared-limits=true"}, {"per-cluster", "-rest-shared-limits=false"}} {
		b.Run(mode.name, func(b *testing.B) {
			var ok, limited int
			var took time.Duration
			for range b.N {
				fake := restFake(b, global)
				start := filepath.Join(b.TempDir(), "start")
				addr := freeAddr(b)
				cmd := exec.Command(os.Args[0], "run", "-api-url", fake.URL(), "-shards", "16", "-clusters", "8",
					"-identify-interval", "50ms", "-metrics-addr", addr, "-log-level", "error", mode.flag)
				cmd.Env = append(os.Environ(), "SHARDVISOR_TEST_MAIN=1", "DISCORD_TOKEN="+fake.Token(),
					"SHARDVISOR_TEST_REST_FLOOD=1150000000000000777 "+start)
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				pollStatus(b, addr, 20*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
				n, l, d := floodFor(b, fake, start, load, true)
				ok, limited, took = ok+n, limited+l, took+d
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
				fake.Close()
			}
			reportREST(b, ok, limited, took, global)
		})
	}
}

// BenchmarkRESTLimitsAcrossSupervisors is BenchmarkRESTLimits for a bot
// on two "machines": an identify-queue service and two supervisors, each
// running 4 of the 8 clusters of 2 shards with the queue's identify pacing,
// all flooding for 30 s against the same fake limits. "service": both take
// their tickets from the service (-rest-limits-url); "per-supervisor":
// each holds its own limits, as before the service held them, and each
// believes it owns the whole global limit.
func BenchmarkRESTLimitsAcrossSupervisors(b *testing.B) {
	const global, load = 50, 30 * time.Second
	for _, mode := range []struct {
		name    string
		service bool
	}{{"service", true}, {"per-supervisor", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var ok, limited int
			var took time.Duration
			for range b.N {
				fake := restFake(b, global)
				start := filepath.Join(b.TempDir(), "start")
				queue := freeAddr(b)
				var cmds []*exec.Cmd
				run := func(env []string, args ...string) {
					cmd := exec.Command(os.Args[0], args...)
					cmd.Env = append(append(os.Environ(), "SHARDVISOR_TEST_MAIN=1"), env...)
					cmd.Stderr = os.Stderr
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
					cmds = append(cmds, cmd)
				}
				run([]string{"DISCORD_TOKEN="}, "identify-queue", "-listen", queue, "-max-concurrency", "16",
					"-identify-interval", "50ms", "-rest-global-limit", "50", "-log-level", "error")
				var addrs []string
				for _, ids := range []string{"0-3", "4-7"} {
					addr := freeAddr(b)
					addrs = append(addrs, addr)
					args := []string{"run", "-api-url", fake.URL(), "-shards", "16", "-clusters", "8", "-cluster-ids", ids,
						"-identify-interval", "50ms", "-metrics-addr", addr, "-log-level", "error", "-identify-queue-url", "http://" + queue}
					if mode.service {
						args = append(args, "-rest-limits-url", "http://"+queue)
					}
					run([]string{"DISCORD_TOKEN=" + fake.Token(), "SHARDVISOR_TEST_REST_FLOOD=1150000000000000777 " + start}, args...)
				}
				for _, addr := range addrs {
					pollStatus(b, addr, 20*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
				}
				n, l, d := floodFor(b, fake, start, load, mode.service)
				ok, limited, took = ok+n, limited+l, took+d
				for i := len(cmds) - 1; i >= 0; i-- { // the supervisors, then the service
					cmds[i].Process.Signal(syscall.SIGTERM)
					cmds[i].Wait()
				}
				fake.Close()
			}
			reportREST(b, ok, limited, took, global)
		})
	}
}

// restFake is the fake of the REST benchmarks: 16 shards' worth of guilds,
// the global limit, and messages at 10 per 500 ms per channel.
func restFake(b *testing.B, global int) *discordtest.Server {
	fake, err := discordtest.NewServer(discordtest.Options{Guilds: 16, Shards: 16, RESTRateLimit: global,
		MaxConcurrency: 16, IdentifyInterval: 50 * time.Millisecond, IdentifyTolerance: tolerance,
		RouteLimits: map[string]discordtest.RouteLimit{"POST channels/{channel}/messages": {Limit: 10, Per: 500 * time.Millisecond}},
		Logger:      slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return fake
}

// floodFor starts the flood (creates start) and returns what the fake
// answered in the load's time: 200s, 429s, and the time measured; with
// show, each 429 is logged.
func floodFor(b *testing.B, fake *discordtest.Server, start string, load time.Duration, show bool) (ok, limited int, took time.Duration) {
	r0 := restCounts(fake.Record())
	began := time.Now()
	os.WriteFile(start, nil, 0o600)
	time.Sleep(load) // the load's length: a benchmark's measure, not a wait for an event
	r1 := restCounts(fake.Record())
	if show {
		log429s(b, fake)
	}
	return r1.ok - r0.ok, r1.limited - r0.limited, time.Since(began)
}

func reportREST(b *testing.B, ok, limited int, took time.Duration, global int) {
	rate := float64(ok) / took.Seconds()
	b.ReportMetric(rate, "ok/s")
	b.ReportMetric(rate/float64(global), "ok/global")
	b.ReportMetric(float64(limited)/float64(b.N), "429s/op")
}
