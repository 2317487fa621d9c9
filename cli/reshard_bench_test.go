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
// it spent, the time any guild was without a live session (the fake's
// record), and of the guilds that joined (one every 20 ms) while it ran,
// those whose GUILD_CREATE both fleets handled around the switch, and
// those neither did.
func BenchmarkReshard(b *testing.B) {
	const every = 500 * time.Millisecond
	floor := 15 * every
	var took, uncovered time.Duration
	var spent, joins, both, neither int
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
		events := filepath.Join(dir, "events")
		cmd.Env = append(os.Environ(), "SHARDVISOR_TEST_MAIN=1", "DISCORD_TOKEN="+fake.Token(), "SHARDVISOR_TEST_EVENTS_FILE="+events)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pollStatus(b, addr, 20*time.Millisecond, func(s supervisor.Snapshot) bool { return s.Ready })
		before := len(fake.Record().Identifies)
		stop, joined := make(chan struct{}), make(chan []string)
		go func() {
			var ids []string
			for {
				select {
				case <-stop:
					joined <- ids
					return
				case <-time.After(20 * time.Millisecond): // the pace of joins: load
				}
				if got, err := fake.AddGuilds(1); err == nil {
					ids = append(ids, got...)
				}
			}
		}()
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
		close(stop)
		ids := <-joined
		time.Sleep(time.Second) // the last joins' handlers write their lines: a settling time, not an event
		handled := guildsHandled(b, events)
		for _, id := range ids {
			switch h := handled[id]; {
			case h[8] > 0 && h[16] > 0:
				both++
			case len(h) == 0:
				neither++
			}
		}
		joins += len(ids)
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
	b.ReportMetric(float64(joins)/n, "joins")
	b.ReportMetric(float64(both)/n, "joins_both")
	b.ReportMetric(float64(neither)/n, "joins_neither")
}
