package metrics_test

import (
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/internal/buildinfo"
	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/sessiondir"
	"github.com/shardvisor/shardvisor/metrics"
	"github.com/shardvisor/shardvisor/supervisor"
)

// exporters are the code that registers metrics, each as production builds
// it, with fakes where it needs a peer: TestReadmeMetricTables reads every
// metric they export. A new metric's registration belongs here (or in the
// function of the component that registers it).
func exporters(t *testing.T) []struct {
	name     string
	register func(prom.Registerer)
} {
	tok, err := secret.NewToken("readme-test-token")
	if err != nil {
		t.Fatal(err)
	}
	queue := func(reg prom.Registerer) *identify.Queue {
		q, err := identify.New(identify.Config{MaxConcurrency: 2, Interval: time.Second}, nil, identify.NewMetrics(reg))
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	return []struct {
		name     string
		register func(prom.Registerer)
	}{
		// What cli registers for every mode's process (run, cluster, identify-queue).
		{"process and build", func(reg prom.Registerer) {
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
		}},
		{"identify queue", func(reg prom.Registerer) { queue(reg) }},
		{"supervisor", func(reg prom.Registerer) {
			plan, err := supervisor.NewPlan(supervisor.PlanConfig{Shards: 4, Clusters: 2})
			if err != nil {
				t.Fatal(err)
			}
			sessions, err := sessiondir.Open(t.TempDir(), sessiondir.Binding{UserID: "1", ShardCount: 4, Token: tok}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			sup, err := supervisor.New(supervisor.Config{Plan: plan, Launcher: &supervisor.ExecLauncher{},
				Policy:          supervisor.RestartPolicy{Delay: time.Second, MaxDelay: time.Minute, Stable: time.Minute},
				ShutdownTimeout: time.Second, ChildWatchdog: time.Second, Token: tok, Sessions: sessions,
				Queue: queue(prom.NewRegistry())}, nil)
			if err != nil {
				t.Fatal(err)
			}
			sup.RegisterMetrics(reg)
		}},
		{"rest limits", func(reg prom.Registerer) {
			if _, err := ratelimit.New(ratelimit.Config{}, reg); err != nil {
				t.Fatal(err)
			}
		}},
		// A supervisor that takes its tickets from a REST limits service
		// (-rest-limits-url), and its client of the service.
		{"rest limits service", func(reg prom.Registerer) {
			plan, err := supervisor.NewPlan(supervisor.PlanConfig{Shards: 2, Clusters: 1})
			if err != nil {
				t.Fatal(err)
			}
			local, err := ratelimit.New(ratelimit.Config{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			remote, err := ratelimit.NewRemote("http://127.0.0.1:9852", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(remote.Close)
			sup, err := supervisor.New(supervisor.Config{Plan: plan, Launcher: &supervisor.ExecLauncher{},
				Policy:          supervisor.RestartPolicy{Delay: time.Second, MaxDelay: time.Minute, Stable: time.Minute},
				ShutdownTimeout: time.Second, ChildWatchdog: time.Second, Token: tok,
				Queue: queue(prom.NewRegistry()), REST: local, RemoteREST: remote}, nil)
			if err != nil {
				t.Fatal(err)
			}
			sup.RegisterMetrics(reg)
			remote.RegisterMetrics(reg)
		}},
		{"shared scrapes", func(reg prom.Registerer) {
			metrics.ShareResponses(http.NotFoundHandler(), time.Second, reg)
		}},
		{"children", func(reg prom.Registerer) {
			metrics.NewChildren(func() []metrics.Child { return nil }, time.Second, nil, reg)
		}},
		{"cluster", func(reg prom.Registerer) {
			bot := cluster.NewBot()
			bot.Command(cluster.Ping())
			_, err := cluster.New(cluster.Config{ShardIDs: []int{0, 1}, ShardCount: 2, Token: tok,
				Identify: queue(prom.NewRegistry())}, bot, nil, reg)
			if err != nil {
				t.Fatal(err)
			}
		}},
	}
}

// capture forwards registrations to a registry and remembers the
// collectors, so that their descriptions (every metric they may export,
// also those with no series yet) can be read as well as what they gather.
type capture struct {
	prom.Registerer
	collectors []prom.Collector
}

func (c *capture) Register(col prom.Collector) error {
	c.collectors = append(c.collectors, col)
	return c.Registerer.Register(col)
}

func (c *capture) MustRegister(cs ...prom.Collector) {
	for _, col := range cs {
		if err := c.Register(col); err != nil {
			panic(err)
		}
	}
}

var fqNameRE = regexp.MustCompile(`^Desc\{fqName: "([^"]*)"`)

// exported returns every metric name the exporters describe or gather, and
// which exporter it came from.
func exported(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range exporters(t) {
		reg := prom.NewPedanticRegistry()
		c := &capture{Registerer: reg}
		e.register(c)
		n := len(out)
		for _, col := range c.collectors {
			ch := make(chan *prom.Desc)
			go func() { col.Describe(ch); close(ch) }()
			for d := range ch {
				m := fqNameRE.FindStringSubmatch(d.String())
				if m == nil {
					t.Fatalf("%s: cannot read the name of %s", e.name, d)
				}
				out[m[1]] = e.name
			}
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Errorf("%s: gather: %v", e.name, err)
		}
		for _, mf := range mfs {
			out[mf.GetName()] = e.name
		}
		if len(out) == n {
			t.Errorf("%s exports no metric", e.name)
		}
	}
	return out
}

// documented returns the metric names in the first column of the
// README's tables headed "metric": each `name`, with `..._suffix` read
// against the name before it, `a_{x,y}_b` as a_x_b and a_y_b, and labels
// (`name{label}`) and remarks in parentheses dropped. Names ending in * are
// prefixes.
func documented(t *testing.T, readme string, exported map[string]string) (names, prefixes []string) {
	t.Helper()
	inTable := false
	for line := range strings.Lines(readme) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		first := strings.TrimSpace(cells[0])
		switch {
		case first == "metric":
			inTable = true
			continue
		case !inTable || strings.HasPrefix(first, "---"):
			continue
		}
		var prev string
		first = parenRE.ReplaceAllString(first, "") // "(no `cluster_id`)" is a remark
		for _, span := range backticked(first) {
			if i := strings.LastIndexByte(span, '{'); i > 0 && strings.HasSuffix(span, "}") {
				span = span[:i] // labels
			}
			if suffix, ok := strings.CutPrefix(span, "..."); ok {
				name, ok := expand(prev, suffix, exported)
				if !ok {
					t.Errorf("README: cannot read %q after %q as a metric that is exported", span, prev)
					continue
				}
				names = append(names, name)
				continue
			}
			for _, name := range alternatives(span) {
				if p, ok := strings.CutSuffix(name, "*"); ok {
					prefixes = append(prefixes, p)
					continue
				}
				names = append(names, name)
				prev = name
			}
		}
	}
	return names, prefixes
}

var (
	backtickRE = regexp.MustCompile("`([^`]+)`")
	parenRE    = regexp.MustCompile(`\([^)]*\)`)
)

func backticked(s string) []string {
	var out []string
	for _, m := range backtickRE.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// alternatives expands one {a,b} group.
func alternatives(s string) []string {
	i, j := strings.IndexByte(s, '{'), strings.IndexByte(s, '}')
	if i < 0 || j < i {
		return []string{s}
	}
	var out []string
	for alt := range strings.SplitSeq(s[i+1:j], ",") {
		out = append(out, s[:i]+strings.TrimSpace(alt)+s[j+1:])
	}
	return out
}

// expand reads "..._suffix" after prev: prev cut at one of its
// underscores, then suffix; the longest such name that is exported.
func expand(prev, suffix string, exported map[string]string) (string, bool) {
	for i := len(prev) - 1; i > 0; i-- {
		if prev[i] == '_' {
			if name := prev[:i] + suffix; exported[name] != "" {
				return name, true
			}
		}
	}
	return "", false
}

// TestReadmeMetricTables keeps the metric tables of README.md and the code
// in step: every metric the code exports is in a table, and every metric in
// a table is exported.
func TestReadmeMetricTables(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	have := exported(t)
	names, prefixes := documented(t, string(b), have)
	if len(names) == 0 {
		t.Fatal("README.md has no metric tables")
	}
	for _, n := range names {
		if have[n] == "" {
			t.Errorf("README.md documents %s, which nothing exports", n)
		}
	}
	for _, p := range prefixes {
		if !slices.ContainsFunc(sortedKeys(have), func(n string) bool { return strings.HasPrefix(n, p) }) {
			t.Errorf("README.md documents %s*, and nothing exported starts so", p)
		}
	}
	for _, n := range sortedKeys(have) {
		if !slices.Contains(names, n) && !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(n, p) }) {
			t.Errorf("%s (from %s) is not in README.md's metric tables", n, have[n])
		}
	}
}
