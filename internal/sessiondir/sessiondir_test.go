package sessiondir

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

func token(t *testing.T, s string) secret.Token {
	t.Helper()
	tok, err := secret.NewToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func session(t *testing.T, shard int, snapshot []byte) *wire.HandoffShard {
	return &wire.HandoffShard{Shard: shard, SessionID: token(t, "sess-secret-0123456789"), Seq: 4242,
		ResumeURL: "ws://127.0.0.1:9/gateway", Snapshot: snapshot}
}

var t0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

// TestTake: a record is used once, by this bot and plan, within the
// resume window; everything else is discarded with its reason.
func TestTake(t *testing.T) {
	bind := Binding{UserID: "111", ShardCount: 8}
	snap := bytes.Repeat([]byte("guilds and channels "), 100_000) // 2 MB: more than one wire chunk
	tests := []struct {
		name   string
		reader Binding       // how the next start opens the directory
		age    time.Duration // when it takes the record
		mangle func(t *testing.T, dir string)
		want   string // "" used, "none", or a Reason
	}{
		{name: "fresh", reader: bind, age: 10 * time.Second},
		{name: "at the window", reader: bind, age: time.Minute},
		{name: "past the window", reader: bind, age: time.Minute + time.Second, want: ReasonExpired},
		{name: "another bot", reader: Binding{UserID: "222", ShardCount: 8}, want: ReasonForeign},
		{name: "another shard count", reader: Binding{UserID: "111", ShardCount: 16}, want: ReasonForeign},
		{name: "another token", reader: Binding{UserID: "111", ShardCount: 8, Token: token(t, "another.token")}, want: ReasonCorrupt},
		{name: "clock went back", reader: bind, age: -2 * time.Minute, want: ReasonCorrupt},
		{name: "no record", reader: bind, mangle: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "shard-3.session"))
		}, want: "none"},
		{name: "one bit flipped in the payload", reader: bind, mangle: edit(func(b []byte) []byte {
			b[len(b)-100] ^= 1
			return b
		}), want: ReasonCorrupt},
		{name: "header edited", reader: bind, mangle: edit(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"shard_count":8`), []byte(`"shard_count":9`), 1)
		}), want: ReasonForeign},
		{name: "header re-dated", reader: bind, age: 10 * time.Minute, mangle: edit(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"written":"2026-12-03T08:00`), []byte(`"written":"2026-12-03T08:09`), 1)
		}), want: ReasonCorrupt},
		{name: "truncated", reader: bind, mangle: edit(func(b []byte) []byte { return b[:len(b)/2] }), want: ReasonCorrupt},
		{name: "cut in the header", reader: bind, mangle: edit(func(b []byte) []byte { return b[:len(magic)+2] }), want: ReasonCorrupt},
		{name: "not a record", reader: bind, mangle: edit(func([]byte) []byte { return []byte("hello") }), want: ReasonCorrupt},
		{name: "empty file", reader: bind, mangle: edit(func([]byte) []byte { return nil }), want: ReasonCorrupt},
		{name: "another shard's record renamed", reader: bind, mangle: func(t *testing.T, dir string) {
			d, _ := Open(dir, Binding{UserID: "111", ShardCount: 8, Token: token(t, "the.bot.token")}, time.Minute)
			if _, err := d.Write(session(t, 4, nil), t0); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "shard-4.session"), filepath.Join(dir, "shard-3.session")); err != nil {
				t.Fatal(err)
			}
		}, want: ReasonForeign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bw := bind
			bw.Token = token(t, "the.bot.token")
			w, err := Open(dir, bw, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(session(t, 3, snap), t0); err != nil {
				t.Fatal(err)
			}
			if tt.mangle != nil {
				tt.mangle(t, dir)
			}
			rb := tt.reader
			if rb.Token.Empty() {
				rb.Token = bw.Token
			}
			r, err := Open(dir, rb, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			h, err := r.Take(3, t0.Add(tt.age))
			var de *DiscardError
			switch {
			case tt.want == "":
				if err != nil || h == nil {
					t.Fatalf("Take = %v, %v; want the session", h, err)
				}
				want := session(t, 3, snap)
				if h.SessionID.Reveal() != want.SessionID.Reveal() || h.Seq != want.Seq || h.ResumeURL != want.ResumeURL || !bytes.Equal(h.Snapshot, snap) {
					t.Fatalf("Take = %v, not what was written", h)
				}
			case tt.want == "none":
				if err != nil || h != nil {
					t.Fatalf("Take = %v, %v; want nothing", h, err)
				}
			case !errors.As(err, &de) || de.Reason != tt.want || h != nil:
				t.Fatalf("Take = %v, %v; want a discard for %s", h, err, tt.want)
			case strings.Contains(err.Error(), "sess-secret"):
				t.Fatalf("the discard reveals the session id: %v", err)
			}
			if h, err := r.Take(3, t0.Add(tt.age)); h != nil || err != nil {
				t.Fatalf("a second Take = %v, %v; a record is taken once", h, err)
			}
		})
	}
}

func edit(f func([]byte) []byte) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		name := filepath.Join(dir, "shard-3.session")
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, f(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecordKeepsItsSecrets: the file is 0600 and holds neither the
// session id nor the snapshot in the clear.
func TestRecordKeepsItsSecrets(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, Binding{UserID: "111", ShardCount: 4, Token: token(t, "the.bot.token")}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write(session(t, 1, []byte("a snapshot of the guild cache")), t0); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "shard-1.session")
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(name)
	for _, s := range []string{"sess-secret", "snapshot of the guild", "the.bot.token", "ws://127.0.0.1"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the record holds %q in the clear", s)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("the directory holds %d files after one write, want 1 (no temporary left)", len(ents))
	}
}

func TestOpenRefuses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o600)
	good := Binding{UserID: "1", ShardCount: 1, Token: token(t, "x.y.z")}
	tests := []struct {
		name   string
		path   string
		bind   Binding
		window time.Duration
		want   string
	}{
		{"a file", file, good, time.Minute, "not a directory"},
		{"under a file", filepath.Join(file, "sub"), good, time.Minute, "not a directory"},
		{"no user", t.TempDir(), Binding{ShardCount: 1, Token: good.Token}, time.Minute, "no bot user id"},
		{"no shards", t.TempDir(), Binding{UserID: "1", Token: good.Token}, time.Minute, "shard count 0"},
		{"no token", t.TempDir(), Binding{UserID: "1", ShardCount: 1}, time.Minute, "no token"},
		{"no window", t.TempDir(), good, 0, "resume window 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.path, tt.bind, tt.window)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestSweep(t *testing.T) {
	dir := t.TempDir()
	bind := Binding{UserID: "111", ShardCount: 4, Token: token(t, "the.bot.token")}
	big, _ := Open(dir, Binding{UserID: "111", ShardCount: 8, Token: bind.Token}, time.Minute)
	for _, s := range []int{1, 6} {
		if _, err := big.Write(session(t, s, nil), t0); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, ".shard-2-123.tmp"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	d, _ := Open(dir, bind, time.Minute)
	if n := d.Sweep(); n != 1 {
		t.Errorf("Sweep removed %d records, want 1 (shard 6 of 8)", n)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "notes.txt shard-1.session" {
		t.Errorf("left %v, want notes.txt and shard-1's record", left)
	}
}

func TestWriteRefuses(t *testing.T) {
	d, _ := Open(t.TempDir(), Binding{UserID: "1", ShardCount: 2, Token: token(t, "x.y.z")}, time.Minute)
	if _, err := d.Write(&wire.HandoffShard{Shard: 0}, t0); err == nil {
		t.Error("a shard without a session was written")
	}
	if _, err := d.Write(session(t, 2, nil), t0); err == nil {
		t.Error("shard 2 of 2 was written")
	}
}
