package cli

import (
	"bytes"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

// mapEnv is an environment of its own, for runMode.
func mapEnv(kv ...string) lookupEnv {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestEveryModeReadsTheEnvironmentItIsGiven: the flags' SHARDVISOR_*
// values, the token, a cluster's identity and status's address all come
// through the getenv a mode is given, never from the process's own
// environment (which the test poisons).
func TestEveryModeReadsTheEnvironmentItIsGiven(t *testing.T) {
	t.Setenv("DISCORD_TOKEN", secretToken)
	t.Setenv("SHARDVISOR_LOG_LEVEL", "loud")
	t.Setenv("SHARDVISOR_CLUSTER_ID", "nope")
	t.Setenv("SHARDVISOR_METRICS_ADDR", "127.0.0.1:3")
	for _, tc := range []struct {
		name string
		env  lookupEnv
		args []string
		code int
		want string
	}{
		{"run: a flag from the given environment", mapEnv("DISCORD_TOKEN="+secretToken, "SHARDVISOR_SHARDS=zero"),
			[]string{"run", "-max-concurrency", "1", "-metrics-addr", ""}, ExitFatalConfig, `-shards "zero"`},
		{"run: no token in the given environment", mapEnv(),
			[]string{"run", "-shards", "4", "-max-concurrency", "1", "-metrics-addr", ""}, ExitFatalConfig, "DISCORD_TOKEN"},
		{"cluster: identity from the given environment", mapEnv("SHARDVISOR_CLUSTER_ID=0", "SHARDVISOR_SHARD_IDS=0,7", "SHARDVISOR_SHARD_COUNT=4"),
			[]string{"cluster"}, ExitFatalConfig, "shard 7 out of range"},
		{"cluster: a flag's variable from the given environment", mapEnv("SHARDVISOR_CLUSTER_ID=0", "SHARDVISOR_SHARD_IDS=0", "SHARDVISOR_SHARD_COUNT=1", "SHARDVISOR_INTENTS=hats"),
			[]string{"cluster"}, ExitFatalConfig, "-intents"},
		{"identify-queue: a flag's variable from the given environment", mapEnv("SHARDVISOR_LISTEN=nope"),
			[]string{"identify-queue", "-max-concurrency", "1"}, ExitFatalConfig, "-listen"},
		{"status: the address from the given environment", mapEnv("SHARDVISOR_METRICS_ADDR=127.0.0.1:1"),
			[]string{"status"}, ExitFailure, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := runMode(tc.args, nil, io.Discard, &stderr, tc.env)
			if out := stderr.String(); code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q in:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}

func TestEnvironmentErrorNamesFlagAndVariable(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	n := fs.Int("shards-per-cluster", 5, "")
	err := parse(fs, nil, mapEnv("SHARDVISOR_SHARDS_PER_CLUSTER=many"))
	if err == nil || ExitCode(err) != ExitFatalConfig || !strings.Contains(err.Error(), "-shards-per-cluster from SHARDVISOR_SHARDS_PER_CLUSTER") {
		t.Fatalf("err = %v", err)
	}
	if err := parse(fs, []string{"-shards-per-cluster", "3"}, mapEnv("SHARDVISOR_SHARDS_PER_CLUSTER=many")); err != nil || *n != 3 {
		t.Fatalf("the flag does not win over the variable: %v, %d", err, *n)
	}
}

// The demo's clusters start without the variables that would set a
// cluster flag, so that the demo shows the defaults; the rest stay.
func TestDemoChildrenGetNoFlagVariables(t *testing.T) {
	environ := []string{"PATH=/bin", "SHARDVISOR_MAX_CONCURRENCY=-1", "SHARDVISOR_COMMAND_GUILD=x", "SHARDVISOR_TEST_MAIN=1", "SHARDVISOR_STATE_CACHE=hats"}
	got := withoutFlagVars(environ, new(clusterFlags).flagSet())
	if want := []string{"PATH=/bin", "SHARDVISOR_TEST_MAIN=1"}; !slices.Equal(got, want) {
		t.Errorf("child environment %q, want %q", got, want)
	}
}
