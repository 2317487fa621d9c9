package metrics_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

const dashboardFile = "grafana/shardvisor.json"

// dashboard is the part of a Grafana dashboard's JSON the tests read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type variable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": ...}
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// query is one expression of one panel.
type query struct {
	Panel, RefID, Expr string
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("decode %s: %v", dashboardFile, err)
	}
	return d
}

// panels returns every panel but rows, those of collapsed rows included.
func (d dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

// queries returns every panel's every expression.
func (d dashboard) queries() []query {
	var out []query
	for _, p := range d.panels() {
		for _, tg := range p.Targets {
			out = append(out, query{Panel: p.Title, RefID: tg.RefID, Expr: tg.Expr})
		}
	}
	return out
}

func (d dashboard) variable(name string) (variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return variable{}, false
}

// queryString is a query variable's query, in either of Grafana's forms.
func (v variable) queryString() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct{ Query string }
	json.Unmarshal(v.Query, &o)
	return o.Query
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// labelValues splits a label_values(selector, label) variable query.
func labelValues(q string) (selector, label string, err error) {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return "", "", fmt.Errorf("variable query %q is not label_values(selector, label)", q)
	}
	return m[1], m[2], nil
}

// substitute replaces Grafana's variables in expr: $name and ${name} by
// vars[name] (longest names first, so $shard_id is not read as $shard).
func substitute(expr string, vars map[string]string) string {
	names := sortedKeys(vars)
	sort.SliceStable(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		expr = strings.ReplaceAll(expr, "${"+n+"}", vars[n])
		expr = strings.ReplaceAll(expr, "$"+n, vars[n])
	}
	return expr
}

var (
	rangeRE    = regexp.MustCompile(`\[([^\]]*)\]`)
	varRE      = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)
	selectorRE = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
)

// perCluster tells whether a metric's series carry cluster_id, and
// perShard whether they carry shard_id. Of the REST metrics only the
// clusters' own (tickets by kind, the time held) do: the rest are the
// supervisor's limiter's.
func perCluster(metric string) bool {
	for _, p := range []string{"shardvisor_cluster_", "shardvisor_shard_", "shardvisor_gateway_", "shardvisor_interaction", "go_",
		"shardvisor_rest_tickets_total", "shardvisor_rest_held_seconds"} {
		if strings.HasPrefix(metric, p) {
			return true
		}
	}
	return false
}

func perShard(metric string) bool { return strings.HasPrefix(metric, "shardvisor_shard_") }

// TestDashboard checks the dashboard's shape without Grafana or
// Prometheus: the stable uid, the variables, every panel's data source,
// rates over $__rate_interval, and every selector filtered by the
// variables that apply to it. TestPrometheus runs the expressions.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "shardvisor-overview" {
		t.Errorf("uid %q: the uid is what links and provisioning refer to; keep it shardvisor-overview", d.UID)
	}
	ds, ok := d.variable("datasource")
	if !ok || ds.Type != "datasource" || ds.queryString() != "prometheus" {
		t.Errorf("want a datasource variable of type datasource and query prometheus, have %+v", ds)
	}
	wantDS := datasourceRef{Type: "prometheus", UID: "${datasource}"}
	for _, name := range []string{"job", "cluster_id", "shard_id"} {
		v, ok := d.variable(name)
		if !ok {
			t.Errorf("no %s variable", name)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || *v.Datasource != wantDS {
			t.Errorf("variable %s: type %q datasource %+v; want a query of %+v", name, v.Type, v.Datasource, wantDS)
		}
		sel, label, err := labelValues(v.queryString())
		if err != nil || label != name {
			t.Errorf("variable %s: query %q: %v", name, v.queryString(), err)
		}
		if name == "cluster_id" && !strings.HasPrefix(sel, "shardvisor_cluster_up") {
			t.Errorf("cluster_id variable from %q; want label_values(shardvisor_cluster_up..., cluster_id)", sel)
		}
		if v.Multi && (!v.IncludeAll || v.AllValue != ".*") {
			t.Errorf("variable %s: multi-value without includeAll and allValue .*: a regex of every value grows with the bot", name)
		}
	}
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}

	var rows []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows = append(rows, p.Title)
		}
	}
	wantRows := []string{"Fleet overview", "Cluster processes", "Gateway shards", "Identify queue and session starts",
		"Events and interactions", "Fleet calls", "Handoffs", "Reshards", "REST rate limits", "Metrics pipeline"}
	if !slices.Equal(rows, wantRows) {
		t.Errorf("rows %q, want %q", rows, wantRows)
	}

	ids := map[int]string{}
	for _, p := range d.Panels {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
	}
	for _, p := range d.panels() {
		if other, dup := ids[p.ID]; dup && other != p.Title {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, g)
		}
		if p.Datasource == nil || *p.Datasource != wantDS {
			t.Errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, wantDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && *tg.Datasource != wantDS {
				t.Errorf("panel %q %s: datasource %+v, want %+v", p.Title, tg.RefID, tg.Datasource, wantDS)
			}
			checkExpr(t, p.Title+" "+tg.RefID, tg.Expr, defined)
		}
	}
	if n := len(d.queries()); n < 40 {
		t.Errorf("only %d queries in the dashboard", n)
	}
}

// checkExpr checks one panel expression's ranges, variables and filters.
func checkExpr(t *testing.T, where, expr string, defined map[string]bool) {
	t.Helper()
	if strings.TrimSpace(expr) == "" {
		t.Errorf("%s: empty expression", where)
		return
	}
	for _, m := range rangeRE.FindAllStringSubmatch(expr, -1) {
		if m[1] != "$__rate_interval" && m[1] != "$__range" {
			t.Errorf("%s: range [%s]; rates take [$__rate_interval] (counts over the time range [$__range]) so that they follow the scrape interval and zoom", where, m[1])
		}
	}
	for _, m := range varRE.FindAllStringSubmatch(expr, -1) {
		if !defined[m[1]] && !strings.HasPrefix(m[1], "__") {
			t.Errorf("%s: variable $%s is not defined", where, m[1])
		}
	}
	sels := selectorRE.FindAllStringSubmatch(expr, -1)
	if len(sels) == 0 {
		t.Errorf("%s: no label-filtered selector in %q", where, expr)
	}
	for _, m := range sels {
		metric, matchers := m[1], m[2]
		if !strings.Contains(matchers, `job=~"$job"`) {
			t.Errorf("%s: %s without job=~\"$job\"", where, metric)
		}
		if perCluster(metric) && !strings.Contains(matchers, `cluster_id=~"$cluster_id"`) {
			t.Errorf("%s: %s without cluster_id=~\"$cluster_id\"", where, metric)
		}
		if perShard(metric) && !strings.Contains(matchers, `shard_id=~"$shard_id"`) {
			t.Errorf("%s: %s without shard_id=~\"$shard_id\"", where, metric)
		}
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") {
		t.Errorf("%s: unbalanced parentheses in %q", where, expr)
	}
}
