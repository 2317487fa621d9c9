// Package systemd holds shardvisor's systemd unit, its example settings
// file, and their tests: static invariants, systemd-analyze verify and
// security, and the unit run under a real (throwaway) systemd.
package systemd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/harness"
)

const (
	unitFile = "shardvisor.service"
	envFile  = "shardvisor.env"
)

// unit is a parsed unit file: section → key → values in order.
type unit map[string]map[string][]string

// parseUnit reads a unit file as systemd does for the parts used here:
// sections, Key=Value, comments (# and ;) and lines continued with \.
func parseUnit(b []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cont strings.Builder
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont.Len() == 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		line = cont.String() + line
		cont.Reset()
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is not Key=Value in a section", n, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		u[section][k] = append(u[section][k], v)
	}
	return u, sc.Err()
}

// last returns the value of a key in effect (the last one).
func (u unit) last(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func readUnit(t *testing.T) unit {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(b)
	if err != nil {
		t.Fatalf("%s: %v", unitFile, err)
	}
	return u
}

// TestUnitSettings checks what the issue asks of the unit, setting by
// setting, and that the stop timeout leaves the supervisor's own
// -shutdown-timeout room to finish.
func TestUnitSettings(t *testing.T) {
	u := readUnit(t)
	want := map[string]string{
		"Type": "notify", "KillMode": "mixed", "Restart": "on-failure", "DynamicUser": "yes",
		"ProtectSystem": "strict", "ExecStart": "/usr/local/bin/shardvisor run",
		"ExecReload": "/bin/kill -HUP $MAINPID", "NoNewPrivileges": "yes",
	}
	for k, v := range want {
		if got := u.last("Service", k); got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	if !strings.Contains(u.last("Service", "RestartPreventExitStatus"), "78") {
		t.Errorf("RestartPreventExitStatus=%q: must hold 78, the exit status of configuration no restart fixes", u.last("Service", "RestartPreventExitStatus"))
	}
	if got := u.last("Service", "LoadCredential"); !strings.HasPrefix(got, "discord-token:/") {
		t.Errorf("LoadCredential=%q, want discord-token:/PATH (shardvisor reads $CREDENTIALS_DIRECTORY/discord-token)", got)
	}
	if got := u.last("Service", "EnvironmentFile"); strings.TrimPrefix(got, "-") != "/etc/shardvisor/shardvisor.env" {
		t.Errorf("EnvironmentFile=%q, want /etc/shardvisor/shardvisor.env (README and example)", got)
	}
	if filters := u["Service"]["SystemCallFilter"]; len(filters) == 0 || filters[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%q, want @system-service first", filters)
	}
	wd, err := harness.ParseSystemdDuration(u.last("Service", "WatchdogSec"))
	if err != nil || wd <= 2*time.Second {
		t.Errorf("WatchdogSec=%q (%v): want a time span above the supervisor's 1 s notify tick", u.last("Service", "WatchdogSec"), err)
	}
	stop, err := harness.ParseSystemdDuration(u.last("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	set, _ := readEnv(t)
	shutdown, err := time.ParseDuration(set["SHARDVISOR_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("%s: SHARDVISOR_SHUTDOWN_TIMEOUT: %v", envFile, err)
	}
	// The supervisor stops its clusters within -shutdown-timeout, then
	// exits: systemd must not kill it before, with some seconds to spare.
	if stop < shutdown+10*time.Second {
		t.Errorf("TimeoutStopSec=%v is not comfortably above SHARDVISOR_SHUTDOWN_TIMEOUT=%v", stop, shutdown)
	}
	// No secret may live in the unit: no Environment= with a token, no
	// token flag on the command line.
	for _, k := range []string{"Environment", "ExecStart", "ExecReload"} {
		for _, v := range u["Service"][k] {
			if strings.Contains(strings.ToUpper(v), "TOKEN") {
				t.Errorf("%s=%q mentions a token: the token comes only through LoadCredential=", k, v)
			}
		}
	}
	if got := u.last("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q, want multi-user.target", got)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readEnv(t *testing.T) (set, documented map[string]string) {
	t.Helper()
	return harness.ParseEnvFile(mustRead(t, envFile))
}

// TestEnvironmentFile checks the example settings file: every variable in
// it, set or commented out, is a flag of `shardvisor run`, and the values
// set are accepted by the real binary (which stops at the missing token).
func TestEnvironmentFile(t *testing.T) {
	bins := harness.Build(t)
	known := harness.Flags(t, bins.Shardvisor, "run")
	set, documented := readEnv(t)
	if len(set) == 0 {
		t.Fatalf("%s sets nothing", envFile)
	}
	all := map[string]string{}
	for k, v := range documented {
		all[k] = v
	}
	for k, v := range set {
		all[k] = v
		if harness.EnvFlag(k) == "" {
			t.Errorf("%s sets %s, not a SHARDVISOR_ variable", envFile, k)
		}
		if strings.Contains(k, "TOKEN") {
			t.Errorf("%s sets %s: the token goes in /etc/shardvisor/discord-token only", envFile, k)
		}
	}
	if err := harness.CheckFlags(known, nil, all); err != nil {
		t.Errorf("%s: %v", envFile, err)
	}
	if err := harness.ParseCheck(bins.Shardvisor, []string{"run"}, set); err != nil {
		t.Errorf("%s's settings: %v", envFile, err)
	}
	// The commented-out values are the documented defaults: each must be
	// accepted too.
	for k, v := range documented {
		if err := harness.ParseCheck(bins.Shardvisor, []string{"run"}, map[string]string{k: v}); err != nil {
			t.Errorf("%s's commented-out %s=%s: %v", envFile, k, v, err)
		}
	}
}

// withBinary returns a copy of the unit, in dir, whose ExecStart names bin
// (systemd-analyze verify checks that the binary exists).
func withBinary(t *testing.T, dir, bin string) string {
	t.Helper()
	b := bytes.ReplaceAll(mustRead(t, unitFile), []byte("/usr/local/bin/shardvisor"), []byte(bin))
	path := filepath.Join(dir, unitFile)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestVerify runs `systemd-analyze verify` on the unit (a copy whose
// ExecStart names a freshly built binary): no error, no warning.
// TestUnderSystemd verifies the unit unchanged, installed, as well.
func TestVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		harness.Missing(t, "no systemd-analyze (Debian: systemd)")
	}
	bins := harness.Build(t)
	path := withBinary(t, t.TempDir(), bins.Shardvisor)
	ctx, cancel := harness.Deadline()
	defer cancel()
	out, err := harness.Run(ctx, nil, "", "systemd-analyze", "verify", path)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// maxExposure is the gate on `systemd-analyze security`.
const maxExposure = 2.0

// TestSecurityScore gates the unit's hardening: `systemd-analyze security
// --offline=true` must rate its exposure at most 2.0. --threshold takes
// tenths on systemd 252 and fails the command above it; the score itself
// is read from the last line as well.
func TestSecurityScore(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		harness.Missing(t, "no systemd-analyze (Debian: systemd)")
	}
	ctx, cancel := harness.Deadline()
	defer cancel()
	out, err := harness.Run(ctx, nil, "", "systemd-analyze", "security", "--offline=true", "--no-pager",
		"--threshold="+strconv.Itoa(int(maxExposure*10)), unitFile)
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level (%v):\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security --offline=true: exposure %.1f (gate %.1f)", score, maxExposure)
	if err != nil || score > maxExposure {
		t.Errorf("exposure %.1f, gate %.1f (%v); the settings it counts against the unit:\n%s", score, maxExposure, err, failing(out))
	}
}

// failing keeps the lines of a security report that count against the unit.
func failing(report string) string {
	var b strings.Builder
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "✗") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
