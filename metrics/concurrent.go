package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Concurrent returns a gatherer that gathers every one of gs at once, each
// in its own goroutine, and merges their families and errors as
// prometheus.Gatherers does (which gathers them one after the other). A
// scrape then takes as long as its slowest gatherer, not their sum: the
// supervisor's own registry (which reads every cluster's /proc files) no
// longer delays the fan-out to the clusters. A gatherer that panics
// panics Gather, once the others have returned.
func Concurrent(gs ...prometheus.Gatherer) prometheus.Gatherer {
	return concurrent(gs)
}

type concurrent []prometheus.Gatherer

func (gs concurrent) Gather() ([]*dto.MetricFamily, error) {
	type result struct {
		mfs      []*dto.MetricFamily
		err      error
		panicked any
	}
	results := make([]result, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					results[i].panicked = p
				}
			}()
			results[i].mfs, results[i].err = g.Gather()
		})
	}
	wg.Wait()
	done := make(prometheus.Gatherers, len(results))
	for i, r := range results {
		if r.panicked != nil {
			panic(r.panicked)
		}
		done[i] = prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return r.mfs, r.err })
	}
	return done.Gather()
}
