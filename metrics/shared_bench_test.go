package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/shardvisor/shardvisor/metrics"
)

// BenchmarkSharedScrapes32 compares, in one run and one process, the
// supervisor's /metrics pipeline before and after scrapes were shared:
// "unshared" is main's (a client_golang process collector per cluster, every
// scrape gathering and encoding on its own), "shared" the supervisor's now
// (NewProcesses, Shared, ShareResponses). 32 fake clusters answer from
// registries like a cluster process's (the Go collector, 2 shards' series,
// 30 event types, a command), gathered and encoded at each fetch as the
// cluster does; every process collector reads this process. 8 scrapers
// scrape 25 times each over HTTP with gzip. It reports the median of 5 lone
// scrapes and the median and 99th percentile of the concurrent ones, in ms.
// The fan-out to real processes, and its wake-ups, are not in these
// figures: BenchmarkConcurrentScrapes32 has them.
func BenchmarkSharedScrapes32(b *testing.B) {
	const clusters = 32
	children := make([]metrics.Child, clusters)
	for i := range children {
		children[i] = fakeChild(b, i)
	}
	list := func() []metrics.Child { return children }
	pid := os.Getpid()
	for _, shared := range []bool{false, true} {
		name := map[bool]string{false: "unshared", true: "shared"}[shared]
		b.Run(name, func(b *testing.B) {
			reg := prom.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			kids := metrics.NewChildren(list, 3*time.Second, nil, reg)
			opts := promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}
			var h http.Handler
			if shared {
				reg.MustRegister(metrics.NewProcesses(func() map[int]int {
					m := map[int]int{}
					for i := range clusters {
						m[i] = pid
					}
					return m
				}))
				h = metrics.ShareResponses(promhttp.HandlerFor(metrics.Shared(prom.Gatherers{reg, kids}), opts), 0, reg)
			} else {
				for i := range clusters {
					prom.WrapRegistererWith(prom.Labels{metrics.Label: strconv.Itoa(i)}, reg).MustRegister(
						collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "shardvisor_cluster",
							PidFn: func() (int, error) { return pid, nil }}))
				}
				h = promhttp.HandlerFor(prom.Gatherers{reg, kids}, opts)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			client := srv.Client()
			client.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
			scrape := func() error {
				resp, err := client.Get(srv.URL)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("scrape: %s", resp.Status)
				}
				return nil
			}
			lone, all := scrapeConcurrently(b, scrape, scrape, 8, 25)
			b.ReportMetric(ms(quantile(lone, 0.5)), "lone-ms")
			b.ReportMetric(ms(quantile(all, 0.5)), "p50-ms")
			b.ReportMetric(ms(quantile(all, 0.99)), "p99-ms")
		})
	}
}

// fakeChild is a cluster whose Fetch gathers and encodes a registry like a
// cluster process's, as the cluster's link does.
func fakeChild(b *testing.B, id int) metrics.Child {
	reg := prom.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	state := prom.NewGaugeVec(prom.GaugeOpts{Name: "shardvisor_shard_state", Help: "h"}, []string{"shard_id", "state"})
	events := prom.NewCounterVec(prom.CounterOpts{Name: "shardvisor_gateway_events_total", Help: "h"}, []string{"type"})
	inter := prom.NewCounterVec(prom.CounterOpts{Name: "shardvisor_interactions_total", Help: "h"}, []string{"command", "outcome"})
	dur := prom.NewHistogramVec(prom.HistogramOpts{Name: "shardvisor_interaction_duration_seconds", Help: "h",
		Buckets: prom.ExponentialBucketsRange(0.005, 10, 12)}, []string{"command"})
	reg.MustRegister(state, events, inter, dur)
	for s := range 2 {
		shard := strconv.Itoa(2*id + s)
		for _, st := range []string{"queued", "connecting", "identifying", "resuming", "ready", "down"} {
			state.WithLabelValues(shard, st).Set(0)
		}
		for _, g := range []string{"guilds", "dispatches_total", "heartbeat_latency_seconds", "session_starts_total", "reconnects_resume", "reconnects_identify"} {
			state.WithLabelValues(shard, g).Set(1)
		}
	}
	for i := range 30 {
		events.WithLabelValues(fmt.Sprintf("EVENT_%d", i)).Add(float64(i))
	}
	for _, o := range []string{"ok", "error", "panic"} {
		inter.WithLabelValues("ping", o)
	}
	dur.WithLabelValues("ping").Observe(0.01)
	return metrics.Child{ID: id, Fetch: func(context.Context) ([]byte, error) {
		mfs, err := reg.Gather()
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return nil, err
			}
		}
		return buf.Bytes(), nil
	}}
}

// scrapeConcurrently times 5 lone scrapes (with lone), then, per b.Loop
// turn, scrapers scrapers scraping (with scrape) each times back to back.
// Each scraper keeps its connection, as Prometheus does (the client must
// keep scrapers idle ones).
func scrapeConcurrently(b *testing.B, lone, scrape func() error, scrapers, each int) (lones, all []time.Duration) {
	timer := func(f func() error) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			start := time.Now()
			err := f()
			return time.Since(start), err
		}
	}
	timed, timedLone := timer(scrape), timer(lone)
	if _, err := timedLone(); err != nil { // the first has no fetch times yet
		b.Fatal(err)
	}
	for range 5 {
		d, err := timedLone()
		if err != nil {
			b.Fatal(err)
		}
		lones = append(lones, d)
	}
	// Untimed, a first concurrent round opens each scraper's connection,
	// as Prometheus keeps its own open: what is timed is the steady state.
	round(b, scrapers, 2, timed)
	b.ResetTimer()
	for b.Loop() {
		for _, t := range round(b, scrapers, each, timed) {
			all = append(all, t...)
		}
	}
	b.StopTimer()
	return lones, all
}

// round runs scrapers goroutines scraping each times back to back and
// returns how long each scrape took.
func round(b *testing.B, scrapers, each int, timed func() (time.Duration, error)) [][]time.Duration {
	took := make([][]time.Duration, scrapers)
	errs := make(chan error, scrapers)
	var wg sync.WaitGroup
	for i := range scrapers {
		wg.Go(func() {
			for range each {
				d, err := timed()
				if err != nil {
					errs <- err
					return
				}
				took[i] = append(took[i], d)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return took
}
