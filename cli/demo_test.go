package cli

import (
	"regexp"
	"syscall"
	"testing"
)

// TestDemo runs `shardvisor demo` as a newcomer would, smaller: every
// shard comes up and answers; SIGUSR1 restarts the whole supervisor and
// every shard RESUMEs from the session dir (no IDENTIFY); SIGUSR2 reshards
// 4 → 8 with no guild uncovered; Ctrl-C stops it cleanly.
func TestDemo(t *testing.T) {
	p := shardvisor(t, nil, "demo", "-guilds", "200", "-shards", "4", "-shards-per-cluster", "2",
		"-identify-interval", "50ms", "-metrics-addr", "127.0.0.1:0", "-ping-every", "1h")
	if !p.out.WaitFor("all 4 shards ready in 2 clusters", patience) {
		t.Fatal("the demo's shards did not come up")
	}
	if !p.out.WaitFor("/ping in guild", patience) {
		t.Error("the demo sent no /ping")
	}
	p.signal(t, syscall.SIGUSR1)
	if !p.out.WaitFor("restarted: every shard ready again", patience) {
		t.Fatal("the demo's supervisor did not restart")
	}
	if m := regexp.MustCompile(`restarted: .*: (\d+) RESUMEs, (\d+) IDENTIFYs`).FindStringSubmatch(p.out.String()); m == nil || m[1] != "4" || m[2] != "0" {
		t.Errorf("after the restart: %v; want 4 RESUMEs and 0 IDENTIFYs", m)
	}
	p.signal(t, syscall.SIGUSR2)
	if !p.out.WaitFor("resharded: 4 → 8 shards", patience) {
		t.Fatal("the demo did not reshard")
	}
	if m := regexp.MustCompile(`resharded: .*, (\d+) IDENTIFYs; guilds without a live session meanwhile: (\d+)`).FindStringSubmatch(p.out.String()); m == nil || m[1] != "8" || m[2] != "0" {
		t.Errorf("after the reshard: %v; want 8 IDENTIFYs and 0 guilds uncovered", m)
	}
	p.signal(t, syscall.SIGINT)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after Ctrl-C", code)
	}
	if !p.out.WaitFor("stopped cleanly", patience) {
		t.Error("the demo does not say it stopped cleanly")
	}
	noLeak(t, "the demo's output", p.out.String())
}
