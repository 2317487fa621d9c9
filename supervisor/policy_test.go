package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

var testPolicy = RestartPolicy{Delay: time.Second, MaxDelay: 5 * time.Minute, Stable: 2 * time.Minute, Jitter: 0.2}

func TestDecideBackoff(t *testing.T) {
	crash := Exit{Code: 1, Uptime: time.Second, Reason: ReasonExit}
	kill := Exit{Code: -1, Signal: syscall.SIGKILL, Uptime: 10 * time.Second, Reason: ReasonSignal}
	stable := Exit{Code: 1, Uptime: 2 * time.Minute, Reason: ReasonExit}
	now := time.Unix(1_700_000_000, 0)
	type step struct {
		exit Exit
		rnd  float64
		want time.Duration
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"doubles from the first delay", []step{
			{crash, 0.5, 1 * time.Second}, {crash, 0.5, 2 * time.Second}, {kill, 0.5, 4 * time.Second},
			{crash, 0.5, 8 * time.Second}, {crash, 0.5, 16 * time.Second},
		}},
		{"capped at the max delay", []step{
			{crash, 0.5, time.Second}, {crash, 0.5, 2 * time.Second}, {crash, 0.5, 4 * time.Second}, {crash, 0.5, 8 * time.Second},
			{crash, 0.5, 16 * time.Second}, {crash, 0.5, 32 * time.Second}, {crash, 0.5, 64 * time.Second}, {crash, 0.5, 128 * time.Second},
			{crash, 0.5, 256 * time.Second}, {crash, 0.5, 5 * time.Minute}, {crash, 0.99, 5 * time.Minute}, {crash, 0.5, 5 * time.Minute},
		}},
		{"reset after a stable run", []step{
			{crash, 0.5, time.Second}, {crash, 0.5, 2 * time.Second}, {crash, 0.5, 4 * time.Second},
			{stable, 0.5, time.Second}, {crash, 0.5, 2 * time.Second},
		}},
		{"jitter spreads both ways", []step{
			{crash, 0, 800 * time.Millisecond}, {crash, 1, 2400 * time.Millisecond}, {crash, 0.25, 3600 * time.Millisecond},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h History
			for i, s := range tc.steps {
				d := testPolicy.Decide(&h, s.exit, now.Add(time.Duration(i)*time.Hour), s.rnd, 1)
				if d.Action != ActionRestart || d.Delay != s.want {
					t.Fatalf("step %d (%v): %+v, want restart after %v", i, s.exit, d, s.want)
				}
			}
		})
	}
}

func TestDecideFatalStatusStops(t *testing.T) {
	var h History
	d := testPolicy.Decide(&h, Exit{Code: wire.ExitConfig, Uptime: time.Hour}, time.Now(), 0.5, 1)
	if d.Action != ActionStopFatal {
		t.Fatalf("exit 78: %+v, want stop", d)
	}
}

func TestDecideIntensity(t *testing.T) {
	p := testPolicy
	p.MaxRestarts, p.Window = 3, time.Minute
	now := time.Unix(1_700_000_000, 0)
	crash := Exit{Code: 2, Uptime: time.Second}
	for _, tc := range []struct {
		name   string
		at     []time.Duration
		action Action
	}{
		{"three in the window restart", []time.Duration{0, 10 * time.Second, 20 * time.Second}, ActionRestart},
		{"four in the window give up", []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second}, ActionStopIntensity},
		{"old ones age out", []time.Duration{0, 10 * time.Second, 20 * time.Second, 61 * time.Second}, ActionRestart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h History
			var d Decision
			for _, at := range tc.at {
				d = p.Decide(&h, crash, now.Add(at), 0.5, 1)
			}
			if d.Action != tc.action {
				t.Fatalf("last decision %+v, want action %v", d, tc.action)
			}
		})
	}
}

func TestDecideBudgetSlowsRestarts(t *testing.T) {
	var h History
	crash := Exit{Code: 1, Uptime: time.Second}
	if d := testPolicy.Decide(&h, crash, time.Now(), 0.5, 10); d.Delay != 10*time.Second {
		t.Fatalf("factor 10: delay %v, want 10s", d.Delay)
	}
	h = History{failures: 20}
	if d := testPolicy.Decide(&h, crash, time.Now(), 0.5, 64); d.Delay != time.Hour {
		t.Fatalf("factor 64 at the max delay: %v, want the 1h cap", d.Delay)
	}
}

func TestPolicyValidate(t *testing.T) {
	ok := testPolicy
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*RestartPolicy)
		want string
	}{
		{func(p *RestartPolicy) { p.Delay = 0 }, "RestartPolicy.Delay"},
		{func(p *RestartPolicy) { p.MaxDelay = time.Millisecond }, "RestartPolicy.MaxDelay"},
		{func(p *RestartPolicy) { p.Stable = 0 }, "RestartPolicy.Stable"},
		{func(p *RestartPolicy) { p.MaxRestarts = -1 }, "RestartPolicy.MaxRestarts"},
		{func(p *RestartPolicy) { p.MaxRestarts = 3 }, "RestartPolicy.Window"},
		{func(p *RestartPolicy) { p.Jitter = 1 }, "RestartPolicy.Jitter"},
	} {
		p := testPolicy
		tc.mod(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want it to name %s", err, tc.want)
		}
	}
}
