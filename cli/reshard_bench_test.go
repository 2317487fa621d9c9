package cli

import (
	"context"
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

// BenchmarkReshard reshards a bot of 8 shards in 4 clusters to 16 against
// the fake at one IDENTIFY per 500 ms (max_concurrency 1), with events
// flowing, and reports: the time from `ctl reshard 16` to the switch
// against the identify floor of 16 shards ((16-1) × 500 ms, what a stop
// and a start with -shards 16 keeps the bot offline for), the IDENTIFYs
// it spent, and the time any guild was without a live session (the
// fake's record).
func BenchmarkReshard(b *testing.B) {
	const every = 500 * time.Millisecond
	floor := 15 * every
	var took, uncovered time.Duration
	var spent int
	for range b.N {
		fake, err := discordtest.NewServer(discordtest.Options{Guilds: 64, Shards: 8, IdentifyInterval: every, IdentifyTolerance: tolerance,
			EventRate: 20, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		sock, addr := filepath.Join(dir, "control.sock"), freeAddr(b)
		cmd := exec.Command(os.Args[0], "run", "-api-url", fake.URL(), "-shards", "8", "-shards-per-cluster", "2",
			"-identify-interval", every.String(), "-metrics-addr", addr, "-log-level", "error", "-control-socket", sock)
		cmd.Env = append(os.Environ(), "SHARDVISOR_TEST_MAIN=1", "DISCORD_TOKEN="+fake.Token())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pollStatus(b, addr, 20*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
		before := len(fake.Record().Identifies)
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		ctl := exec.CommandContext(ctx, os.Args[0], "ctl", "-control-socket", sock, "reshard", "16")
		ctl.Env = append(os.Environ(), "SHARDVISOR_TEST_MAIN=1")
		if out, err := ctl.CombinedOutput(); err != nil {
			b.Fatalf("ctl reshard 16: %v: %s", err, out)
		}
		cancel()
		pollStatus(b, addr, 10*time.Millisecond, func(s supervisor.Snapshot) bool { return s.ShardCount == 16 && s.Reshard == nil && s.Ready })
		took += time.Since(began)
		spent += len(fake.Record().Identifies) - before
		for _, g := range fake.Uncovered(began, time.Now()) {
			uncovered += g.To.Sub(g.From)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		fake.Close()
	}
	n := float64(b.N)
	b.ReportMetric(took.Seconds()/n, "reshard_s")
	b.ReportMetric(floor.Seconds(), "floor_s")
	b.ReportMetric(took.Seconds()/n/floor.Seconds(), "reshard/floor")
	b.ReportMetric(float64(spent)/n, "identifies")
	b.ReportMetric(uncovered.Seconds()/n, "uncovered_s")
}
