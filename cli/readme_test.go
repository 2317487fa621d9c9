package cli

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestReadmeConfigurationTable keeps the README's configuration table and
// the run mode's flags in step: every flag is there, with its environment
// variable and its default, and nothing else is.
func TestReadmeConfigurationTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var f runFlags
	f.register(fs)
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`-") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`-")
		env := strings.Trim(strings.TrimSpace(cells[2]), "`")
		def := strings.Trim(strings.TrimSpace(cells[3]), "`")
		documented[name] = true
		fl := fs.Lookup(name)
		if fl == nil {
			t.Errorf("README documents -%s, which run does not have", name)
			continue
		}
		if want := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")); env != want {
			t.Errorf("-%s: README says %s, ff reads %s", name, env, want)
		}
		if want := fl.DefValue; def != want && !(def == "(none)" && want == "") {
			t.Errorf("-%s: README says default %q, the flag's is %q", name, def, want)
		}
	}
	fs.VisitAll(func(fl *flag.Flag) {
		if !documented[fl.Name] {
			t.Errorf("-%s is not in the README's configuration table", fl.Name)
		}
	})
}

func TestLocalAddr(t *testing.T) {
	for env, want := range map[string]string{
		"":               DefaultMetricsAddr,
		"0.0.0.0:9000":   "127.0.0.1:9000",
		":9000":          "127.0.0.1:9000",
		"[::]:9000":      "[::1]:9000",
		"10.1.2.3:9851":  "10.1.2.3:9851",
		"localhost:9851": "localhost:9851",
	} {
		if got := localAddr(func(string) string { return env }); got != want {
			t.Errorf("SHARDVISOR_METRICS_ADDR=%q: %q, want %q", env, got, want)
		}
	}
}
