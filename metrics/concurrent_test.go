package metrics

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func TestConcurrentGathersAtOnceAndMergesAsGatherers(t *testing.T) {
	family := func(name, label string, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Help: proto.String("h"), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: proto.String("l"), Value: proto.String(label)}},
				Gauge: &dto.Gauge{Value: proto.Float64(v)}}}}
	}
	answers := [][]*dto.MetricFamily{
		{family("a", "x", 1), family("c", "x", 1)},
		{family("a", "y", 2), family("b", "y", 2), family("c", "x", 3)}, // c{l="x"} twice: an error, the first kept
	}
	failure := errors.New("a cluster sent garbage")
	// Each gatherer waits until both have started: one after the other,
	// they would never return.
	var started sync.WaitGroup
	started.Add(len(answers))
	gs := make([]prometheus.Gatherer, len(answers))
	plain := make(prometheus.Gatherers, len(answers))
	for i, mfs := range answers {
		var err error
		if i == 1 {
			err = failure
		}
		gs[i] = prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			started.Done()
			started.Wait()
			return mfs, err
		})
		plain[i] = prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, err })
	}
	done := make(chan struct{})
	var got []*dto.MetricFamily
	var gotErr error
	go func() {
		defer close(done)
		got, gotErr = Concurrent(gs...).Gather()
	}()
	wait(t, "Concurrent's Gather", done)
	want, wantErr := plain.Gather()
	if gotErr == nil || wantErr == nil || gotErr.Error() != wantErr.Error() {
		t.Errorf("error %v, want prometheus.Gatherers' %v", gotErr, wantErr)
	}
	if !strings.Contains(gotErr.Error(), failure.Error()) || !strings.Contains(gotErr.Error(), "collected before") {
		t.Errorf("error %v: the duplicate is not in it", gotErr)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d families, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("family %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

func TestConcurrentPanicsInTheCaller(t *testing.T) {
	g := Concurrent(prometheus.NewRegistry(), prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { panic("boom") }))
	defer func() {
		if p := recover(); p != "boom" {
			t.Errorf("recovered %v, want the gatherer's panic", p)
		}
	}()
	g.Gather()
}
