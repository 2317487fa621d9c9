package harness

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// EnvPrefix is the prefix of the environment variables that set flags.
const EnvPrefix = "SHARDVISOR_"

// Flags returns the names of a mode's flags, as `shardvisor MODE -h`
// lists them.
func Flags(t testing.TB, bin, mode string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	out, err := Run(ctx, []string{}, "", bin, mode, "-h")
	if err != nil {
		t.Fatalf("%s %s -h: %v\n%s", bin, mode, err, out)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(out, -1) {
		names[m[1]] = true
	}
	if len(names) == 0 {
		t.Fatalf("%s %s -h listed no flags:\n%s", bin, mode, out)
	}
	return names
}

// EnvFlag returns the flag an environment variable sets
// (SHARDVISOR_SHARDS_PER_CLUSTER → shards-per-cluster), or "" if the
// variable is not a SHARDVISOR_ one.
func EnvFlag(name string) string {
	rest, ok := strings.CutPrefix(name, EnvPrefix)
	if !ok {
		return ""
	}
	return strings.ReplaceAll(strings.ToLower(rest), "_", "-")
}

// CheckFlags returns an error naming every flag in args (-name or
// -name=value; values are skipped) and every SHARDVISOR_ variable in env
// that is not a flag of the mode.
func CheckFlags(known map[string]bool, args []string, env map[string]string) error {
	var bad []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !known[name] {
			bad = append(bad, "flag -"+name)
		}
	}
	for k := range env {
		if f := EnvFlag(k); f != "" && !known[f] {
			bad = append(bad, "variable "+k+" (flag -"+f+")")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("not flags of this mode: %s", strings.Join(bad, ", "))
	}
	return nil
}

// NoTokenMessage is how shardvisor says it found no token: a run that
// gets this far has parsed and checked every flag before it.
const NoTokenMessage = "no Discord token"

// ParseCheck runs `shardvisor args...` with only env (and no token
// anywhere) and returns nil if it got as far as looking for the token:
// every flag and variable was known and its value accepted.
func ParseCheck(bin string, args []string, env map[string]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	vars := []string{}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	out, err := Run(ctx, vars, "", append([]string{bin}, args...)...)
	if err == nil || !strings.Contains(out, NoTokenMessage) {
		return fmt.Errorf("shardvisor %s: want it to stop at the missing token, got %v:\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Deadline is a context for one step of a test.
func Deadline() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), Patience)
}

// ParseEnvFile parses KEY=VALUE lines (as systemd's EnvironmentFile= and
// docker's --env-file take them; # starts a comment line); commented-out
// assignments ("#KEY=VALUE") are returned separately, as documentation.
func ParseEnvFile(b []byte) (set, documented map[string]string) {
	set, documented = map[string]string{}, map[string]string{}
	assign := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if c, ok := strings.CutPrefix(line, "#"); ok {
			if m := assign.FindStringSubmatch(strings.TrimSpace(c)); m != nil {
				documented[m[1]] = m[2]
			}
			continue
		}
		if m := assign.FindStringSubmatch(line); m != nil {
			set[m[1]] = strings.Trim(m[2], `"`)
		}
	}
	return set, documented
}

// ParseSystemdDuration parses a systemd time span such as "45s", "3min",
// "1min 30s" or a bare number of seconds.
func ParseSystemdDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty time span")
	}
	units := map[string]time.Duration{
		"us": time.Microsecond, "ms": time.Millisecond, "": time.Second, "s": time.Second, "sec": time.Second,
		"m": time.Minute, "min": time.Minute, "h": time.Hour, "hr": time.Hour, "d": 24 * time.Hour,
	}
	var total time.Duration
	re := regexp.MustCompile(`^\s*([0-9]+)\s*([a-z]*)`)
	for rest := s; strings.TrimSpace(rest) != ""; {
		m := re.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("time span %q: cannot parse %q", s, rest)
		}
		u, ok := units[m[2]]
		if !ok {
			return 0, fmt.Errorf("time span %q: unknown unit %q", s, m[2])
		}
		var n int64
		fmt.Sscan(m[1], &n)
		total += time.Duration(n) * u
		rest = rest[len(m[0]):]
	}
	return total, nil
}
