package cli

import (
	"context"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/shardvisor/shardvisor/discordtest"
)

// rawLine matches what must never reach an operator's log: discordgo's
// own prefix, Go struct and byte dumps, and fmt's complaints.
var rawLine = regexp.MustCompile(`discordgo: |&discordgo\.|json\.RawMessage|\[\]uint8|0x[0-9a-f]{2}, 0x|%!`)

// TestLogLinesInOurWords starts a bot against a fake that refuses early
// IDENTIFYs (its interval is four times the supervisor's, so most of them
// get op 9) and reads every line the supervisor and its clusters log:
// none may be one of discordgo's raw lines (issue 13, item 3).
func TestLogLinesInOurWords(t *testing.T) {
	fake := newFake(t, discordtest.Options{Shards: 4, Guilds: 20, IdentifyInterval: 4 * interval, IdentifyTolerance: tolerance})
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "4", "-shards-per-cluster", "2", "-max-concurrency", "1"}, fastFlags(fake, freeAddr(t))...)...)
	p.until(t, "every shard ready", ready)
	if n := fake.Record().Identified(-1, discordtest.OutcomeInvalidSession); n == 0 {
		t.Fatalf("the fake refused no IDENTIFY: the test proves nothing")
	}
	before := fake.Record().Identified(1, discordtest.OutcomeReady)
	fake.SendMalformed(0, discordtest.MalformedBinary)
	fake.SendMalformed(0, discordtest.MalformedUnknownOp)
	fake.InvalidSession(1, false)
	if !p.out.WaitFor("kind=binary_frame", patience) || !p.out.WaitFor("kind=unknown_op", patience) {
		t.Fatalf("the odd frames are not logged in our words")
	}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if _, err := fake.WaitFor(ctx, func(r discordtest.Record) bool { return r.Identified(1, discordtest.OutcomeReady) > before }); err != nil {
		t.Fatalf("shard 1 never identified again after op 9: %v", err)
	}
	p.until(t, "ready after op 9", ready)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	for _, line := range strings.Split(p.out.String(), "\n") {
		if rawLine.MatchString(line) {
			t.Errorf("a raw discordgo line reached the log: %s", line)
		}
	}
}
