package metrics_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/shardvisor/shardvisor/discordtest"
)

// BenchmarkScrape8x8 measures one scrape of the supervisor's /metrics with
// 8 cluster processes of 8 shards each (64 shards) running against the
// fake Discord: the series in it (all, and those of the clusters, labelled
// cluster_id), its size, and how long it takes (ms/scrape; ns/op is the
// same). Run it with: go test -run '^$' -bench Scrape -benchtime 20x ./metrics/
func BenchmarkScrape8x8(b *testing.B) {
	const shards, clusters = 64, 8
	bot := startBot(b, discordtest.Options{Guilds: 64 * 20, MaxConcurrency: 16, EventRate: 1}, shards, clusters)
	ctx := context.Background()
	bot.ping(b, shards) // interactions and their histograms, as in production
	var body []byte
	for range 2 { // the second has the fetch times of the first
		var err error
		if body, err = bot.scrape(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		var err error
		if body, err = bot.scrape(ctx); err != nil {
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
