package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// prometheus is a real Prometheus server run by the test.
type prometheus struct {
	proc   *process
	base   string // http://127.0.0.1:port
	client *http.Client
}

// startPrometheus runs prometheus on 127.0.0.1 with a temporary storage,
// scraping target every second as job "shardvisor" and evaluating
// prometheus/rules.yml every second, and waits until it is ready.
func startPrometheus(t testing.TB, bin, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: shardvisor
    static_configs:
      - targets: [%q]
`, rules, target)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=info")
	p := &prometheus{base: "http://" + addr, client: newClient(t)}
	p.proc = start(t, "prometheus", cmd)
	deadline := time.Now().Add(patience)
	for {
		if p.proc.exited() {
			t.Fatalf("prometheus exited: %v", p.proc.cmd.ProcessState)
		}
		if _, err := httpGet(context.Background(), p.client, p.base+"/-/ready"); err == nil {
			return p
		} else if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within %v: %v", patience, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sample is one element of a query's result.
type sample struct {
	Labels map[string]string
	Value  float64
}

// api calls Prometheus' HTTP API and decodes data.
func (p *prometheus) api(ctx context.Context, path string, params url.Values, data any) error {
	body, err := httpGet(ctx, p.client, p.base+path+"?"+params.Encode())
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if body != nil && json.Unmarshal(body, &r) == nil && r.Status == "error" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	if err != nil {
		return err
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: status %q", path, r.Status)
	}
	return json.Unmarshal(r.Data, data)
}

// query evaluates expr now through /api/v1/query.
func (p *prometheus) query(ctx context.Context, expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	parse := func(v [2]any) (float64, error) {
		s, _ := v[1].(string)
		return strconv.ParseFloat(s, 64)
	}
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, fmt.Errorf("decode vector: %w", err)
		}
		out := make([]sample, 0, len(vec))
		for _, s := range vec {
			f, err := parse(s.Value)
			if err != nil {
				return nil, fmt.Errorf("decode value %v: %w", s.Value, err)
			}
			out = append(out, sample{s.Metric, f})
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, fmt.Errorf("decode scalar: %w", err)
		}
		f, err := parse(v)
		return []sample{{Value: f}}, err
	default:
		return nil, fmt.Errorf("query %q: result type %q", expr, data.ResultType)
	}
}

// hasData evaluates expr and returns an error unless it succeeds with at
// least one sample whose value is a number (not NaN).
func (p *prometheus) hasData(ctx context.Context, expr string) ([]sample, error) {
	res, err := p.query(ctx, expr)
	if err != nil {
		return nil, err
	}
	for _, s := range res {
		if !math.IsNaN(s.Value) {
			return res, nil
		}
	}
	if len(res) > 0 {
		return res, fmt.Errorf("%d series, every value NaN", len(res))
	}
	return nil, fmt.Errorf("no data")
}

// until polls check with a generous deadline and fails the test with its
// last error when it never returns nil.
func until(t testing.TB, what string, check func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		err := check(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v: %v", what, patience, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// rule is one rule as Prometheus loaded it.
type rule struct {
	Name           string    `json:"name"`
	Query          string    `json:"query"`
	Type           string    `json:"type"`
	Health         string    `json:"health"`
	LastError      string    `json:"lastError"`
	LastEvaluation time.Time `json:"lastEvaluation"`
	State          string    `json:"state"`
}

func (p *prometheus) rules(ctx context.Context) ([]rule, error) {
	var data struct {
		Groups []struct {
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api(ctx, "/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []rule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// alertProbes returns, for each alert whose expression is not simply
// "EXPR OP NUMBER", which expressions prove that it reads series that
// exist: an alert's expression returns nothing while all is well, which
// cannot tell a healthy bot from a misspelt metric or a vector match that
// never matches. For the others the probe is EXPR, the expression without
// its threshold; TestPrometheus refuses to guess for a compound one.
func alertProbes() map[string][]string {
	return map[string][]string{
		// Both sides of the "and" exist, and their labels match (the "and"
		// of the two without thresholds returns data).
		"ShardvisorIdentifyQueueStalled": {
			`sum without (bucket) (shardvisor_identify_queue_length)`,
			`increase(shardvisor_identify_grants_total[10m])`,
			`sum without (bucket) (shardvisor_identify_queue_length) and increase(shardvisor_identify_grants_total[10m])`,
		},
		// Both sides exist, and their labels match: the difference of the two
		// sides returns data only when the one-to-one match finds pairs.
		"ShardvisorSessionStartsExhausting": {
			`shardvisor_session_starts_remaining`,
			`sum without (cluster_id) (shardvisor_cluster_shards)`,
			`shardvisor_session_starts_remaining - sum without (cluster_id) (shardvisor_cluster_shards)`,
		},
	}
}

var (
	thresholdRE = regexp.MustCompile(`^(.*\S)\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+(e[+-]?[0-9]+)?\s*$`)
	matchersRE  = regexp.MustCompile(`\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\}`)
)

// probes returns the expressions that prove alert r is wired to series.
func probes(r rule) ([]string, error) {
	if ps, ok := alertProbes()[r.Name]; ok {
		return ps, nil
	}
	m := thresholdRE.FindStringSubmatch(r.Query)
	if m == nil {
		return nil, fmt.Errorf("alert %s: %q is not EXPR OP NUMBER; give its probes in alertProbes", r.Name, r.Query)
	}
	inner := m[1]
	bare := matchersRE.ReplaceAllString(inner, "{}") // label matchers hold != and regexes
	for _, op := range []string{" and ", " or ", " unless ", "==", "!=", ">", "<"} {
		if strings.Contains(bare, op) {
			return nil, fmt.Errorf("alert %s: %q is compound (%q); give its probes in alertProbes", r.Name, r.Query, strings.TrimSpace(op))
		}
	}
	return []string{inner}, nil
}

// TestPrometheus is the proof that the metrics, the dashboard and the
// alerting rules fit together: a real Prometheus scrapes a supervisor
// running four real cluster processes (eight shards) against the fake
// Discord, with a cluster killed and replaced (its first REST request
// answered 429) and /ping answered on every shard; then every expression
// of every dashboard panel, under several choices of the dashboard's
// variables, and every alerting rule's expression run through Prometheus'
// HTTP API. Each must succeed, and return data (for an alert, its probes:
// see alertProbes). Prometheus itself must have loaded and evaluated every
// rule without an error, no alert may fire on the healthy bot, and
// promtool check metrics must find nothing to say about the supervisor's
// /metrics.
func TestPrometheus(t *testing.T) {
	bin := need(t, "prometheus")
	need(t, "promtool")
	const shards, clusters = 8, 4
	b := startBot(t, discordtest.Options{Guilds: 80, MaxConcurrency: 2, EventRate: 2}, shards, clusters,
		"-scrape-timeout", "750ms", "-session-dir", t.TempDir())
	prom := startPrometheus(t, bin, b.addr)

	// Every cluster's series, scraped at least twice before anything
	// happens (so that rates see what comes next).
	until(t, "two scrapes of every cluster", func(ctx context.Context) error {
		res, err := prom.query(ctx, `count_over_time(shardvisor_interactions_total{job="shardvisor", outcome="ok"}[5m]) >= 2`)
		if err == nil && len(res) != clusters {
			err = fmt.Errorf("%d of %d clusters", len(res), clusters)
		}
		return err
	})

	// A crash: cluster 0 killed, restarted, ready again. It leaves a last
	// exit status, a restart and new IDENTIFYs behind.
	snap, err := b.status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	victim := snap.Clusters[0]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A 429 for the REST row: the next REST request, the replacement's
	// first GET gateway, is answered 429 of a route's bucket, which
	// discordgo waits out and sends again (its shards connect a second
	// later). The supervisor counts a 429 of scope user and an invalid
	// request. (Not a /ping's reply: the wait would make it a slow
	// interaction.)
	b.fake.FailREST(http.StatusTooManyRequests, 1)
	b.until(t, "cluster 0 replaced and every shard ready", func(s supervisor.Snapshot) bool {
		return s.Clusters[0].Generation > victim.Generation && s.Ready
	})
	b.ping(t, shards)
	// Fleet calls, through the supervisor's HTTP API: each a broadcast
	// that every cluster answers.
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		if _, err := httpGet(ctx, b.client, "http://"+b.addr+"/fleet/stats"); err != nil {
			t.Fatalf("GET /fleet/stats: %v", err)
		}
		cancel()
	}

	// The injected 429 reached the supervisor's limiter: the REST panels
	// have more than zeros to show.
	until(t, "the 429 in the supervisor's REST metrics", func(ctx context.Context) error {
		for _, expr := range []string{`shardvisor_rest_rate_limited_total{job="shardvisor", scope="user"} > 0`,
			`shardvisor_rest_invalid_requests{job="shardvisor"} > 0`, `shardvisor_rest_requests_total{job="shardvisor", class="4xx"} > 0`} {
			if _, err := prom.hasData(ctx, expr); err != nil {
				return fmt.Errorf("%s: %w", expr, err)
			}
		}
		return nil
	})

	// Prometheus has loaded every rule and evaluated it without an error.
	var rules []rule
	until(t, "every rule evaluated", func(ctx context.Context) error {
		var err error
		if rules, err = prom.rules(ctx); err != nil {
			return err
		}
		if len(rules) == 0 {
			return fmt.Errorf("no rules loaded")
		}
		for _, r := range rules {
			if r.Health != "ok" {
				return fmt.Errorf("rule %s: health %q, last error %q", r.Name, r.Health, r.LastError)
			}
		}
		return nil
	})

	// The dashboard's variables and their values.
	d := loadDashboard(t)
	const window = "5m" // $__rate_interval and $__range: the whole test fits in it
	vars := map[string]string{"__rate_interval": window, "__range": window, "__interval": "1s"}
	values := map[string][]string{}
	for _, name := range []string{"job", "cluster_id", "shard_id"} {
		v, _ := d.variable(name)
		sel, label, err := labelValues(v.queryString())
		if err != nil {
			t.Fatal(err)
		}
		sel = substitute(sel, vars)
		until(t, "values of variable "+name, func(ctx context.Context) error {
			var got []string
			if err := prom.api(ctx, "/api/v1/label/"+label+"/values", url.Values{"match[]": {sel}}, &got); err != nil {
				return err
			}
			if len(got) == 0 {
				return fmt.Errorf("label_values(%s, %s): none", sel, label)
			}
			values[name] = got
			return nil
		})
		if v.IncludeAll {
			vars[name] = v.AllValue
		} else {
			vars[name] = values[name][0]
		}
	}
	t.Logf("variables: job %v, cluster_id %v, shard_id %v", values["job"], values["cluster_id"], values["shard_id"])
	if len(values["cluster_id"]) != clusters || len(values["shard_id"]) != shards {
		t.Errorf("variables list %d clusters and %d shards, want %d and %d", len(values["cluster_id"]), len(values["shard_id"]), clusters, shards)
	}
	// Every expression under: everything selected; the killed cluster
	// alone (Grafana puts a single value in as is); two clusters (a
	// multi-value selection, as Grafana's regex); one shard.
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for name, value := range vars {
			m[name] = value
		}
		m[k] = v
		return m
	}
	shardOfVictim := strconv.Itoa(victim.Shards[0])
	choices := []struct {
		name string
		vars map[string]string
	}{
		{"all", vars},
		{"cluster_id=" + strconv.Itoa(victim.ID), with("cluster_id", strconv.Itoa(victim.ID))},
		{"cluster_id=(0|1)", with("cluster_id", "(0|1)")},
		{"shard_id=" + shardOfVictim, with("shard_id", shardOfVictim)},
	}
	type check struct{ what, expr string }
	var checks []check
	for _, q := range d.queries() {
		for _, c := range choices {
			checks = append(checks, check{fmt.Sprintf("panel %q %s (%s)", q.Panel, q.RefID, c.name), substitute(q.Expr, c.vars)})
		}
	}
	var alertExprs []check
	for _, r := range rules {
		if r.Type != "alerting" {
			continue
		}
		alertExprs = append(alertExprs, check{"alert " + r.Name, r.Query})
		ps, err := probes(r)
		if err != nil {
			t.Error(err)
			continue
		}
		for i, p := range ps {
			checks = append(checks, check{fmt.Sprintf("alert %s probe %d", r.Name, i+1), p})
		}
	}
	if len(alertExprs) < 17 {
		t.Errorf("Prometheus loaded %d alerting rules, want every one of rules.yml's 17", len(alertExprs))
	}
	for name := range alertProbes() {
		if !slices.ContainsFunc(rules, func(r rule) bool { return r.Name == name }) {
			t.Errorf("alertProbes names %s, which rules.yml does not have", name)
		}
	}

	// Data arrives with the scrapes (and rates need two samples after the
	// crash): poll until every check has data, then report what has none.
	failed := map[string]error{}
	began := time.Now()
	until(t, "data for every panel and alert probe", func(ctx context.Context) error {
		clear(failed)
		for _, c := range checks {
			if _, err := prom.hasData(ctx, c.expr); err != nil {
				failed[c.what] = fmt.Errorf("%s: %w", c.expr, err)
			}
		}
		for _, c := range alertExprs { // may return nothing, must run
			if _, err := prom.query(ctx, c.expr); err != nil {
				failed[c.what] = fmt.Errorf("%s: %w", c.expr, err)
			}
		}
		if len(failed) == 0 {
			return nil
		}
		var lines []string
		for _, k := range sortedKeys(failed) {
			lines = append(lines, k+": "+failed[k].Error())
		}
		return fmt.Errorf("%d of %d without data:\n%s", len(failed), len(checks)+len(alertExprs), strings.Join(lines, "\n"))
	})
	t.Logf("%d panel expressions (%d queries with the variable choices) and %d alert expressions with %d probes: all with data, %v after the pings",
		len(d.queries()), len(d.queries())*len(choices), len(alertExprs), len(checks)-len(d.queries())*len(choices), time.Since(began).Round(time.Millisecond))

	// The healthy bot sets off no alert.
	var alerts struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	if err := prom.api(context.Background(), "/api/v1/alerts", nil, &alerts); err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts.Alerts {
		if a.State == "firing" {
			t.Errorf("alert firing on a healthy bot: %v", a.Labels)
		} else {
			t.Logf("alert %s: %v", a.State, a.Labels)
		}
	}

	// promtool's lint of what Prometheus scraped, now that every kind of
	// series exists (a last exit status included).
	body, err := b.scrape(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"shardvisor_cluster_last_exit_code", "shardvisor_cluster_scrape_errors_total",
		"shardvisor_interaction_duration_seconds_bucket", "shardvisor_cluster_process_cpu_seconds_total"} {
		if !strings.Contains(string(body), "\n"+name+"{") {
			t.Errorf("the scrape linted has no %s", name)
		}
	}
	out, ok := promtool(t, ".", body, "check", "metrics")
	if !ok || strings.TrimSpace(out) != "" {
		t.Errorf("promtool check metrics on the supervisor's /metrics:\n%s", out)
	}
	series, _ := countSeries(body)
	out, _ = promtool(t, ".", body, "check", "metrics", "--extended")
	top := strings.SplitAfterN(out, "\n", 9)
	t.Logf("%d series in a scrape of %d clusters of %d shards; the largest families:\n%s", series, clusters, shards/clusters, strings.Join(top[:len(top)-1], ""))
}
