package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// BenchmarkSupervisor64Shards runs the real binary (built here, without
// the race detector) against discordtest with 64 shards in 8 clusters,
// max_concurrency 4 and a 100 ms identify interval, and reports:
//
//   - startup: from the supervisor's exec to every shard ready, against
//     the identify floor (⌈64/4⌉ − 1) × 100 ms = 1.5 s (target ≤ 1.05×);
//   - recovery: a cluster killed with SIGKILL until its 8 shards are ready
//     again, less its own identify floor (2 per bucket: 100 ms; target
//     overhead under 100 ms);
//   - the time from a cluster's death to its replacement's start, the
//     supervisor's RSS with 8 children, and the stop time of 8 children.
//
// Run with `make bench` (or -bench Supervisor -benchtime 1x).
func BenchmarkSupervisor64Shards(b *testing.B) {
	bin := buildShardvisor(b)
	const (
		shards, clusters, conc = 64, 8, 4
		interval               = 100 * time.Millisecond
	)
	floor := time.Duration((shards+conc-1)/conc-1) * interval
	clusterFloor := time.Duration(shards/clusters/conc-1) * interval
	var startup, firstToReady, restartStart, recovery, stop time.Duration
	var toFirst, firstToLast, lastToReady time.Duration
	var rss, childRSS float64
	var tooSoon int
	minGap := time.Hour
	for range b.N {
		// The fake's tolerance is measurement slack for its own receive
		// timestamps (nine processes on two cores); min-gap-ms reports what
		// it measured.
		fake, err := discordtest.NewServer(discordtest.Options{Guilds: 640, Shards: shards, MaxConcurrency: conc,
			IdentifyInterval: interval, IdentifyTolerance: tolerance, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		addr := freeAddr(b)
		// nice: the fake plays Discord, which has CPUs of its own; on two
		// shared cores it would otherwise timestamp frames late.
		cmd := exec.Command("nice", "-n", "10", bin, "run", "-api-url", fake.URL(), "-shards", "auto", "-clusters", strconv.Itoa(clusters),
			"-identify-interval", interval.String(), "-metrics-addr", addr, "-restart-delay", "1ms", "-log-level", "warn")
		cmd.Env = append(os.Environ(), "DISCORD_TOKEN="+fake.Token())
		cmd.Stderr = os.Stderr
		began := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pollReady(b, addr, http.StatusOK)
		startup += time.Since(began)
		snap := pollStatus(b, addr, 0, func(s supervisor.Snapshot) bool { return s.Ready })
		r := fake.Record()
		firstToReady += time.Since(r.Identifies[0].At)
		rss += procRSS(cmd.Process.Pid)
		for _, c := range snap.Clusters {
			childRSS += procRSS(c.PID)
		}

		// A crash comes at steady state, not while 56 shards still digest
		// their READY and guilds: let the bot settle first (a benchmark's
		// setup, not synchronisation).
		time.Sleep(time.Second)
		victim := snap.Clusters[3]
		killed := time.Now()
		syscall.Kill(victim.PID, syscall.SIGKILL)
		pollReady(b, addr, http.StatusServiceUnavailable) // the death noticed
		pollReady(b, addr, http.StatusOK)                 // its shards ready again
		recovered := time.Since(killed)
		after := pollStatus(b, addr, 0, func(s supervisor.Snapshot) bool { return s.Clusters[3].Generation == 2 && s.Ready })
		recovery += recovered - clusterFloor
		restartStart += after.Clusters[3].StartedAt.Sub(killed)
		var first, last time.Time
		for _, id := range fake.Record().Identifies {
			if id.At.After(killed) {
				if first.IsZero() {
					first = id.At
				}
				last = id.At
			}
		}
		toFirst += first.Sub(killed)
		firstToLast += last.Sub(first)
		lastToReady += killed.Add(recovered).Sub(last)

		stopping := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("exit after SIGTERM: %v", err)
		}
		stop += time.Since(stopping)
		for _, id := range fake.Record().Identifies {
			if id.TooSoon {
				tooSoon++
			}
			if id.Gap > 0 {
				minGap = min(minGap, id.Gap)
			}
		}
		if f := os.Getenv("BENCH_RECORD"); f != "" {
			data, _ := json.Marshal(fake.Record())
			os.WriteFile(f, data, 0o644)
		}
		fake.Close()
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(ms(startup), "startup-ms")
	b.ReportMetric(float64(floor.Milliseconds()), "floor-ms")
	b.ReportMetric(ms(startup)/float64(floor.Milliseconds()), "startup/floor")
	b.ReportMetric(ms(firstToReady)/float64(floor.Milliseconds()), "first-identify-to-ready/floor")
	b.ReportMetric(ms(recovery), "recovery-overhead-ms")
	b.ReportMetric(ms(restartStart), "death-to-restart-ms")
	b.ReportMetric(ms(toFirst), "recovery-kill-to-first-identify-ms")
	b.ReportMetric(ms(firstToLast), "recovery-first-to-last-identify-ms")
	b.ReportMetric(ms(lastToReady), "recovery-last-identify-to-ready-ms")
	b.ReportMetric(ms(stop), "stop-8-clusters-ms")
	b.ReportMetric(rss/n, "supervisor-rss-MiB")
	b.ReportMetric(childRSS/n/clusters, "cluster-rss-MiB")
	b.ReportMetric(float64(tooSoon)/n, "pacing-violations")
	b.ReportMetric(float64(minGap.Microseconds())/1000, "min-gap-ms")
}

// buildShardvisor builds cmd/shardvisor into a temporary directory.
func buildShardvisor(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "shardvisor")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/shardvisor").CombinedOutput()
	if err != nil {
		b.Fatalf("build shardvisor: %v\n%s", err, out)
	}
	return bin
}

// pollReady polls /readyz every 2 ms until it answers code: it is cheap,
// so a fine poll hardly disturbs what it measures (/status, a document
// of every shard, polled as often, slowed recovery by half).
func pollReady(b *testing.B, addr string, code int) {
	deadline := time.Now().Add(2 * time.Minute)
	client := &http.Client{Timeout: 5 * time.Second}
	for time.Now().Before(deadline) {
		if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == code {
				return
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("/readyz did not answer %d within 2 minutes", code)
}

// pollStatus polls /status every `every` until cond holds.
func pollStatus(b *testing.B, addr string, every time.Duration, cond func(supervisor.Snapshot) bool) supervisor.Snapshot {
	deadline := time.Now().Add(2 * time.Minute)
	client := &http.Client{Timeout: 5 * time.Second}
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + addr + "/status")
		if err == nil {
			var s supervisor.Snapshot
			err = json.NewDecoder(resp.Body).Decode(&s)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && cond(s) {
				return s
			}
		}
		time.Sleep(every)
	}
	b.Fatal("condition not met within 2 minutes")
	return supervisor.Snapshot{}
}

// procRSS is a process's resident memory in MiB, from /proc/PID/status.
func procRSS(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kb, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 64)
			return v / 1024
		}
	}
	return 0
}
