package metrics_test

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
)

// BenchmarkScrape8x8 measures one scrape of the supervisor's /metrics with
// 8 cluster processes of 8 shards each (64 shards) running against the
// fake Discord: the series in it (all, and those of the clusters, labelled
// cluster_id), its size, and how long it takes (ms/scrape; ns/op is the
// same). Each scrape is sent with Cache-Control: no-cache, so that it
// gathers (back to back, -scrape-reuse would answer most with the last
// one's answer). Run it with:
// go test -run '^$' -bench Scrape -benchtime 20x ./metrics/
func BenchmarkScrape8x8(b *testing.B) {
	const shards, clusters = 64, 8
	bot := startBot(b, discordtest.Options{Guilds: 64 * 20, MaxConcurrency: 16, EventRate: 1}, shards, clusters)
	ctx := context.Background()
	bot.ping(b, shards) // interactions and their histograms, as in production
	scrape := func() ([]byte, error) {
		return httpGet(ctx, bot.client, "http://"+bot.addr+"/metrics", "Cache-Control", "no-cache")
	}
	var body []byte
	for range 2 { // the second has the fetch times of the first
		var err error
		if body, err = scrape(); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		var err error
		if body, err = scrape(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	series, ofClusters := countSeries(body)
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(ofClusters), "cluster_series")
	b.ReportMetric(float64(len(body)), "bytes/scrape")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/scrape")
}

// countSeries counts the samples of a text exposition, and those with a
// cluster_id label.
func countSeries(body []byte) (all, ofClusters int) {
	for line := range bytes.Lines(body) {
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
			continue
		}
		all++
		if bytes.Contains(line, []byte(`cluster_id="`)) {
			ofClusters++
		}
	}
	return all, ofClusters
}

// BenchmarkConcurrentScrapes32 measures the supervisor's /metrics under
// concurrent scrapers: 32 cluster processes of 2 shards each (64 shards)
// against the fake Discord, 8 scrapers each scraping 25 times back to
// back. It reports the median of 5 lone scrapes sent with Cache-Control:
// no-cache, each a gather of its own (lone-ms), and the median and 99th
// percentile of the concurrent ones (p50-ms, p99-ms). Overlapping scrapes
// share one fan-out to the clusters (ShareResponses, Shared); "reuse" runs
// the supervisor as it ships, where a scrape also gets the answer of one
// begun less than -scrape-reuse (500 ms) before, "no-reuse" with
// -scrape-reuse 0, where every scrape that does not overlap another
// gathers. Run it with:
// go test -run '^$' -bench ConcurrentScrapes32 -benchtime 1x ./metrics/
func BenchmarkConcurrentScrapes32(b *testing.B) {
	const shards, clusters, scrapers, each = 64, 32, 8, 25
	for _, v := range []struct {
		name string
		args []string
	}{{"reuse", nil}, {"no-reuse", []string{"-scrape-reuse", "0"}}} {
		b.Run(v.name, func(b *testing.B) {
			bot := startBot(b, discordtest.Options{Guilds: 64 * 20, MaxConcurrency: 16, EventRate: 1}, shards, clusters, v.args...)
			ctx := context.Background()
			bot.ping(b, shards)
			// One connection kept per scraper, as Prometheus keeps its own.
			tr := &http.Transport{MaxIdleConnsPerHost: scrapers}
			b.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr}
			url := "http://" + bot.addr + "/metrics"
			lone := func() error { _, err := httpGet(ctx, client, url, "Cache-Control", "no-cache"); return err }
			scrape := func() error { _, err := httpGet(ctx, client, url); return err }
			lones, all := scrapeConcurrently(b, lone, scrape, scrapers, each)
			b.ReportMetric(ms(quantile(lones, 0.5)), "lone-ms")
			b.ReportMetric(ms(quantile(all, 0.5)), "p50-ms")
			b.ReportMetric(ms(quantile(all, 0.99)), "p99-ms")
		})
	}
}

// quantile returns the q-quantile of ds (nearest rank), sorting ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
