package cli

import (
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// BenchmarkRollingRestart64Shards rolls the real binary's 64 shards in 8
// clusters (max_concurrency 1, 200 ms identify interval, 10 events per
// second per shard) once with the handoff and once without
// (-rolling-handoff=false, the behaviour before it), in the same run, and
// reports for each: IDENTIFYs and RESUMEs during the roll, and how long
// each shard was down, from the end of its old connection to the RESUME or
// accepted IDENTIFY of the new process (p50, mean and max over the
// shards, and the sum), and the roll's duration.
func BenchmarkRollingRestart64Shards(b *testing.B) {
	bin := buildShardvisor(b)
	const shards = 64
	for _, mode := range []struct {
		name string
		flag string
	}{{"handoff", "-rolling-handoff=true"}, {"identify", "-rolling-handoff=false"}} {
		b.Run(mode.name, func(b *testing.B) {
			var idents, resumes int
			var sum, worst, took time.Duration
			var downs []time.Duration
			for range b.N {
				fake, err := discordtest.NewServer(discordtest.Options{Guilds: 20 * shards, Shards: shards, EventRate: 10,
					IdentifyInterval: 200 * time.Millisecond, IdentifyTolerance: tolerance, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				addr := freeAddr(b)
				cmd := exec.Command("nice", "-n", "10", bin, "run", "-api-url", fake.URL(), "-shards", "64", "-clusters", "8",
					"-identify-interval", "200ms", "-metrics-addr", addr, "-log-level", "warn", mode.flag)
				cmd.Env = append(os.Environ(), "DISCORD_TOKEN="+fake.Token())
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				pollStatus(b, addr, 20*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
				before := fake.Record()
				rolled := time.Now()
				cmd.Process.Signal(syscall.SIGHUP)
				pollStatus(b, addr, 20*time.Millisecond, func(s supervisor.Snapshot) bool {
					for _, c := range s.Clusters {
						if c.RestartsBy[supervisor.ReasonRolling] != 1 {
							return false
						}
					}
					return s.Ready
				})
				took += time.Since(rolled)
				after := fake.Record()
				idents += len(after.Identifies) - len(before.Identifies)
				resumes += len(after.Resumes) - len(before.Resumes)
				for shard := range shards {
					d := shardDown(after, shard, rolled)
					sum += d
					worst = max(worst, d)
					downs = append(downs, d)
				}
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
				fake.Close()
			}
			n := float64(b.N)
			b.ReportMetric(float64(idents)/n, "identifies/op")
			b.ReportMetric(float64(resumes)/n, "resumes/op")
			slices.Sort(downs)
			b.ReportMetric(float64(downs[len(downs)/2].Microseconds())/1000, "p50-down-ms")
			b.ReportMetric(float64(sum.Milliseconds())/n/shards, "down-ms/shard")
			b.ReportMetric(float64(worst.Milliseconds()), "max-down-ms")
			b.ReportMetric(sum.Seconds()/n, "shard-s/op")
			b.ReportMetric(took.Seconds()/n, "roll-s")
		})
	}
}

// shardDown is how long shard was down in a roll that began at t: from the
// close of the connection that carried it then to the first RESUME or
// accepted IDENTIFY after that close.
func shardDown(r discordtest.Record, shard int, t time.Time) time.Duration {
	var down time.Time
	for _, c := range r.Connections {
		if c.Shard == shard && c.Opened.Before(t) && !c.Closed.IsZero() && c.Closed.After(t) {
			down = c.Closed
		}
	}
	if down.IsZero() {
		return 0
	}
	var ups []time.Time
	for _, rr := range r.Resumes {
		if rr.Shard == shard && rr.Outcome == discordtest.OutcomeResumed && rr.At.After(down) {
			ups = append(ups, rr.At)
		}
	}
	for _, id := range r.Identifies {
		if id.Shard == shard && id.Outcome == discordtest.OutcomeReady && id.At.After(down) {
			ups = append(ups, id.At)
		}
	}
	if len(ups) == 0 {
		return 0
	}
	return slices.MinFunc(ups, func(a, b time.Time) int { return a.Compare(b) }).Sub(down)
}
