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

// BenchmarkSupervisorRestart64Shards restarts the real binary's whole
// supervisor (SIGTERM, then a new one, as systemctl restart does) with 64
// shards in 8 clusters, max_concurrency 1, a 100 ms identify interval and
// 10 events per second per shard, with -session-dir. It reports, in the
// same run: the cold start (exec to every shard ready: the identify floor
// of 63 × 100 ms = 6.3 s, and what it took), the restart (SIGTERM to every
// shard of the new supervisor ready), their ratio, the IDENTIFYs and
// RESUMEs of the restart, the events Discord replayed, and the snapshot
// bytes written.
func BenchmarkSupervisorRestart64Shards(b *testing.B) {
	bin := buildShardvisor(b)
	const (
		shards, clusters = 64, 8
		interval         = 100 * time.Millisecond
	)
	floor := time.Duration(shards-1) * interval
	var cold, restart time.Duration
	var idents, resumes, replayed, records int
	for range b.N {
		fake, err := discordtest.NewServer(discordtest.Options{Guilds: 64 * 20, Shards: shards, EventRate: 10,
			ChannelsPerGuild: 5, RolesPerGuild: 5, MembersPerGuild: 5,
			IdentifyInterval: interval, IdentifyTolerance: tolerance, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(b.TempDir(), "sessions")
		addr := freeAddr(b)
		start := func() *exec.Cmd {
			cmd := exec.Command("nice", "-n", "10", bin, "run", "-api-url", fake.URL(), "-shards", "64", "-clusters", "8",
				"-identify-interval", interval.String(), "-metrics-addr", addr, "-log-level", "warn", "-session-dir", dir)
			cmd.Env = append(os.Environ(), "DISCORD_TOKEN="+fake.Token())
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			return cmd
		}
		began := time.Now()
		cmd := start()
		pollStatus(b, addr, 10*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
		cold += time.Since(began)
		time.Sleep(time.Second) // steady state, events flowing (a benchmark's setup)

		before := fake.Record()
		stopped := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("exit after SIGTERM: %v", err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "shard-*.session"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				records += int(fi.Size())
			}
		}
		cmd = start()
		pollStatus(b, addr, 10*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
		restart += time.Since(stopped)
		after := fake.Record()
		idents += len(after.Identifies) - len(before.Identifies)
		for _, rr := range after.Resumes[len(before.Resumes):] {
			if rr.Outcome == discordtest.OutcomeResumed {
				resumes++
				replayed += rr.Replayed
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		fake.Close()
	}
	n := float64(b.N)
	b.ReportMetric(floor.Seconds(), "floor-s")
	b.ReportMetric(cold.Seconds()/n, "cold-start-s")
	b.ReportMetric(restart.Seconds()/n, "restart-s")
	b.ReportMetric(restart.Seconds()/cold.Seconds(), "restart/cold")
	b.ReportMetric(float64(idents)/n, "identifies/op")
	b.ReportMetric(float64(resumes)/n, "resumes/op")
	b.ReportMetric(float64(replayed)/n, "replayed/op")
	b.ReportMetric(float64(records)/n, "record-bytes/op")
}
