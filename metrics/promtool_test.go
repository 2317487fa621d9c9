package metrics_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// promtool runs promtool with args in dir (stdin from stdin when not nil)
// and returns its combined output and whether it exited 0.
func promtool(t testing.TB, dir string, stdin []byte, args ...string) (string, bool) {
	t.Helper()
	path := need(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("promtool %v did not finish within %v: %s", args, patience, out)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("promtool %v: %v", args, err)
	}
	return string(out), err == nil
}

// TestRules checks the alerting rules with promtool: they load without a
// complaint from every lint it has, and their unit tests (prometheus/rules_test.yml) pass.
func TestRules(t *testing.T) {
	out, ok := promtool(t, "prometheus", nil, "check", "rules", "--lint=all", "--lint-fatal", "rules.yml")
	if !ok || strings.Contains(strings.ToLower(out), "warn") || !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules rules.yml:\n%s", out)
	}
	t.Logf("promtool check rules: %s", strings.TrimSpace(out))
	out, ok = promtool(t, "prometheus", nil, "test", "rules", "rules_test.yml")
	if !ok || !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules rules_test.yml:\n%s", out)
	}
}

// TestExampleConfig checks the example scrape configuration, and through
// it the rule file it loads, with promtool check config.
func TestExampleConfig(t *testing.T) {
	out, ok := promtool(t, "prometheus", nil, "check", "config", "--lint=all", "--lint-fatal", "prometheus.yml")
	if !ok || strings.Contains(strings.ToLower(out), "warn") || !strings.Contains(out, "1 rule files found") {
		t.Errorf("promtool check config prometheus.yml:\n%s", out)
	}
}
