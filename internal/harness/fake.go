package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
)

// Fake is a fakediscord process.
type Fake struct {
	// URL is what shardvisor's -api-url takes.
	URL string
	// Token is the token it accepts.
	Token  string
	proc   *Proc
	client *http.Client
}

// StartFake runs the fakediscord binary with args, behind prefix (e.g.
// nsenter into a network namespace; nil for none), and returns once it
// has said where it serves. client reaches it (Net.Client).
func StartFake(t testing.TB, client *http.Client, prefix []string, bin string, args ...string) *Fake {
	t.Helper()
	lines := make(chan string, 16)
	argv := append(append(append([]string{}, prefix...), bin), args...)
	p := Start(t, nil, lines, argv...)
	f := &Fake{proc: p, client: client}
	timeout := time.After(Patience)
	for f.URL == "" || f.Token == "" {
		select {
		case l := <-lines:
			if u, ok := strings.CutPrefix(l, "fakediscord: serving "); ok {
				f.URL = strings.TrimSpace(u)
			}
			if tok, ok := strings.CutPrefix(strings.TrimSpace(l), "token: "); ok {
				f.Token = tok
			}
		case <-p.Done():
			t.Fatalf("fakediscord exited: %v\n%s", p.err, p.Output())
		case <-timeout:
			t.Fatalf("fakediscord did not say where it serves within %v:\n%s", Patience, p.Output())
		}
	}
	t.Cleanup(func() {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		if _, err := p.Wait(Patience); err != nil {
			t.Errorf("fakediscord: %v", err)
		}
	})
	return f
}

// Record returns the fake's record of what clients did.
func (f *Fake) Record() (discordtest.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r discordtest.Record
	err := GetJSON(ctx, f.client, f.URL+discordtest.ControlPrefix+"/record", &r)
	return r, err
}

// WaitRecord polls the fake's record until cond holds.
func (f *Fake) WaitRecord(t testing.TB, what string, cond func(discordtest.Record) bool) discordtest.Record {
	t.Helper()
	var last discordtest.Record
	Poll(t, what, 50*time.Millisecond, func() (bool, error) {
		r, err := f.Record()
		if err != nil {
			return false, err
		}
		last = r
		return cond(r), nil
	})
	return last
}

// AllClosed reports whether no session is alive.
func AllClosed(r discordtest.Record) bool {
	for _, s := range r.Sessions {
		if s.Alive() {
			return false
		}
	}
	return true
}

// CheckPacing returns an error for each IDENTIFY that came too soon after
// the previous one of its bucket (the fake enforces the interval and
// records it), and if a shard ever had two live sessions at once.
func CheckPacing(r discordtest.Record) error {
	var errs []error
	prev := map[int]discordtest.IdentifyRecord{}
	for _, id := range r.Identifies {
		if p, ok := prev[id.Bucket]; ok && id.TooSoon {
			errs = append(errs, fmt.Errorf("bucket %d: IDENTIFY of shard %d (conn %d) at %s came %v after that of shard %d (conn %d, %s) at %s",
				id.Bucket, id.Shard, id.Conn, id.At.Format("15:04:05.000"), id.Gap, p.Shard, p.Conn, p.Outcome, p.At.Format("15:04:05.000")))
		}
		prev[id.Bucket] = id
	}
	if r.MaxLive > 1 {
		errs = append(errs, fmt.Errorf("a shard had %d live sessions at once: the bot would answer twice", r.MaxLive))
	}
	return errors.Join(errs...)
}

// Output returns what the fake logged.
func (f *Fake) Output() string { return f.proc.Output() }
