package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
)

// fleetBenchResult is what /fleet-bench replies.
type fleetBenchResult struct {
	Calls   int     `json:"calls"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
}

// addFleetBenchCommand adds /fleet-bench to the test bot: from the cluster
// that gets it, n broadcasts of "who" one after another (mode broadcast),
// or n Asks of "who" to the other clusters in turn from conc goroutines
// (mode ask); it replies with the calls' latency and rate as JSON.
func addFleetBenchCommand(bot *cluster.Bot) {
	bot.Command(&discordgo.ApplicationCommand{Name: "fleet-bench", Description: "test: time fleet calls"}, func(i *cluster.Interaction) error {
		opt := map[string]*discordgo.ApplicationCommandInteractionDataOption{}
		for _, o := range i.ApplicationCommandData().Options {
			opt[o.Name] = o
		}
		n, conc := int(opt["n"].IntValue()), int(opt["conc"].IntValue())
		f, self := i.Fleet(), i.Local().ClusterID
		clusters := int(opt["clusters"].IntValue())
		ctx := i.Context
		var (
			mu   sync.Mutex
			lat  []time.Duration
			errs int
			wg   sync.WaitGroup
		)
		start := time.Now()
		work := func(k int) {
			t0 := time.Now()
			var err error
			if opt["mode"].StringValue() == "broadcast" {
				var answers []cluster.Answer
				answers, err = f.Broadcast(ctx, "who", nil)
				for _, a := range answers {
					if err == nil && a.Err != nil {
						err = a.Err
					}
				}
				if err == nil && len(answers) != clusters {
					err = fmt.Errorf("%d answers", len(answers))
				}
			} else {
				_, err = f.Ask(ctx, (self+1+k%(clusters-1))%clusters, "who", nil)
			}
			d := time.Since(t0)
			mu.Lock()
			lat = append(lat, d)
			if err != nil {
				errs++
			}
			mu.Unlock()
		}
		next := make(chan int)
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					work(k)
				}
			}()
		}
		for k := range n {
			next <- k
		}
		close(next)
		wg.Wait()
		took := time.Since(start)
		slices.Sort(lat)
		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
		b, _ := json.Marshal(fleetBenchResult{Calls: n, Errors: errs, Seconds: took.Seconds(),
			P50us: us(lat[len(lat)/2]), P99us: us(lat[len(lat)*99/100])})
		return i.Reply(string(b))
	})
}

// BenchmarkFleet16Clusters runs the test binary (the supervisor and 16
// cluster processes, one shard each, without the race detector unless the
// benchmark has it) against discordtest, and from cluster 0 times:
//
//   - broadcast: 16-cluster broadcasts one after another, p50 and p99
//     (goal p99 <= 2 ms);
//   - ask: Asks through the supervisor from 64 goroutines, calls per
//     second (goal >= 20,000);
//
// with the supervisor's CPU (user+system, from /proc) over each.
func BenchmarkFleet16Clusters(b *testing.B) {
	const clusters = 16
	fake, err := discordtest.NewServer(discordtest.Options{Guilds: 160, Shards: clusters, MaxConcurrency: clusters,
		IdentifyInterval: 100 * time.Millisecond, IdentifyTolerance: tolerance, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	addr := freeAddr(b)
	cmd := exec.Command(os.Args[0], "run", "-api-url", fake.URL(), "-shards", "auto", "-clusters", strconv.Itoa(clusters),
		"-identify-interval", "100ms", "-metrics-addr", addr, "-log-level", "warn")
	cmd.Env = append(os.Environ(), "SHARDVISOR_TEST_MAIN=1", "DISCORD_TOKEN="+fake.Token())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	pollReady(b, addr, http.StatusOK)
	guild := fake.GuildIDsOf(0, clusters)[0] // cluster 0's
	run := func(mode string, n, conc int) (fleetBenchResult, float64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cpu0 := procCPU(b, cmd.Process.Pid).Seconds()
		rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: "fleet-bench", Options: []discordtest.Option{
			{Name: "mode", Value: mode}, {Name: "n", Value: n}, {Name: "conc", Value: conc}, {Name: "clusters", Value: clusters}}})
		cpu := procCPU(b, cmd.Process.Pid).Seconds() - cpu0
		if err != nil {
			b.Fatalf("/fleet-bench %s: %v", mode, err)
		}
		var r fleetBenchResult
		if err := json.Unmarshal([]byte(rep.Content), &r); err != nil || r.Errors > 0 {
			b.Fatalf("/fleet-bench %s: %q (%v)", mode, rep.Content, err)
		}
		return r, cpu
	}
	run("broadcast", 200, 1) // warm up
	b.ResetTimer()
	var bc, ask fleetBenchResult
	var bcCPU, askCPU float64
	for range b.N {
		bc, bcCPU = run("broadcast", 2000, 1)
		ask, askCPU = run("ask", 50000, 64)
	}
	b.ReportMetric(bc.P50us, "broadcast16-p50-us")
	b.ReportMetric(bc.P99us, "broadcast16-p99-us")
	b.ReportMetric(float64(bc.Calls)/bc.Seconds, "broadcast16/s")
	b.ReportMetric(100*bcCPU/bc.Seconds, "broadcast-supervisor-cpu-%")
	b.ReportMetric(float64(ask.Calls)/ask.Seconds, "asks/s")
	b.ReportMetric(ask.P50us, "ask-p50-us")
	b.ReportMetric(ask.P99us, "ask-p99-us")
	b.ReportMetric(100*askCPU/ask.Seconds, "ask-supervisor-cpu-%")
	b.ReportMetric(1e6*askCPU/float64(ask.Calls), "supervisor-cpu-us/ask")
}
