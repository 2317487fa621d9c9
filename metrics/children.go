// Package metrics merges the supervisor's metrics with every cluster
// process's, labelled cluster_id, and serves them from one endpoint. The
// Grafana dashboard (grafana/) and Prometheus rules (prometheus/) beside it
// read these metrics.
package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Label is the label that tells the clusters' series apart. Not "cluster",
// which Kubernetes setups use for the Kubernetes cluster's name.
const Label = "cluster_id"

// Child is one cluster process whose metrics can be fetched.
type Child struct {
	ID    int
	Fetch func(ctx context.Context) ([]byte, error) // Prometheus' length-delimited protobuf
}

// Children is a prometheus.Gatherer over every cluster process: at each
// scrape it asks them all at once and waits at most Timeout. A child that is
// slow, gone or sends garbage leaves its series out and is counted in
// shardvisor_cluster_scrape_errors_total; it never stalls the scrape.
type Children struct {
	list    func() []Child
	timeout time.Duration
	log     *slog.Logger
	errors  *prometheus.CounterVec
	took    *prometheus.GaugeVec
}

// NewChildren returns the gatherer; its own metrics go to reg.
func NewChildren(list func() []Child, timeout time.Duration, logger *slog.Logger, reg prometheus.Registerer) *Children {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Children{list: list, timeout: timeout, log: logger,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_cluster_scrape_errors_total",
			Help: "Scrapes that left a cluster's series out: it did not answer in time or sent what could not be read.",
		}, []string{Label}),
		took: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardvisor_cluster_scrape_duration_seconds",
			Help: "How long the last fetch of a cluster's metrics took.",
		}, []string{Label}),
	}
	reg.MustRegister(c.errors, c.took)
	return c
}

// Gather implements prometheus.Gatherer.
func (c *Children) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	children := c.list()
	results := make([][]*dto.MetricFamily, len(children))
	var wg sync.WaitGroup
	for i, ch := range children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := strconv.Itoa(ch.ID)
			// At 0 from the first scrape on, so that rate() and increase()
			// see a cluster's first error and alerts have a series to read.
			errs := c.errors.WithLabelValues(id)
			start := time.Now()
			mfs, err := fetch(ctx, ch)
			c.took.WithLabelValues(id).Set(time.Since(start).Seconds())
			if err != nil {
				errs.Inc()
				c.log.Warn("cluster metrics left out of this scrape", "cluster_id", ch.ID, "err", err)
				return
			}
			results[i] = mfs
		}()
	}
	wg.Wait()
	return merge(results), nil
}

func fetch(ctx context.Context, ch Child) ([]*dto.MetricFamily, error) {
	b, err := ch.Fetch(ctx)
	if err != nil {
		return nil, err
	}
	// One label pair for all the child's series: nothing changes it.
	label := &dto.LabelPair{Name: proto.String(Label), Value: proto.String(strconv.Itoa(ch.ID))}
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.NewFormat(expfmt.TypeProtoDelim))
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode metrics of cluster %d: %w", ch.ID, err)
		}
		for _, m := range mf.Metric {
			if slices.ContainsFunc(m.Label, func(lp *dto.LabelPair) bool { return lp.GetName() == Label }) {
				return nil, fmt.Errorf("cluster %d sent a metric that already has the %s label", ch.ID, Label)
			}
			// Labels come sorted by name from the child's registry: ours
			// goes in its place.
			if !slices.IsSortedFunc(m.Label, byName) {
				slices.SortFunc(m.Label, byName)
			}
			i, _ := slices.BinarySearchFunc(m.Label, label, byName)
			m.Label = slices.Insert(m.Label, i, label)
		}
		out = append(out, mf)
	}
}

func byName(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) }

// merge joins families of the same name from different children.
func merge(results [][]*dto.MetricFamily) []*dto.MetricFamily {
	byName := map[string]*dto.MetricFamily{}
	var names []string
	for _, mfs := range results {
		for _, mf := range mfs {
			if have, ok := byName[mf.GetName()]; ok {
				if have.GetType() == mf.GetType() {
					have.Metric = append(have.Metric, mf.Metric...)
				}
				continue
			}
			byName[mf.GetName()] = mf
			names = append(names, mf.GetName())
		}
	}
	sort.Strings(names)
	out := make([]*dto.MetricFamily, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out
}
