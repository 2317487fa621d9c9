package sessiondir

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

func reshardPlan() Plan {
	return Plan{ShardCount: 16, ShardsPerCluster: 4, UserID: "111", Written: t0.Add(time.Nanosecond),
		Reason: "reshard 8 -> 16 (ctl)"}
}

// TestReadPlan: a plan is read back as it was written, by this bot under
// its token; anything else is refused with an error that names the file
// and says what is wrong, and never holds the token.
func TestReadPlan(t *testing.T) {
	bind := Binding{UserID: "111", ShardCount: 8}
	// forged writes a plan file of b, with a valid mac, whatever b holds.
	forged := func(edit func(*planBody)) func(t *testing.T, d *Dir) {
		return func(t *testing.T, d *Dir) {
			b := planBody{Version: planVersion, ShardCount: 16, ShardsPerCluster: 4, UserID: "111", Written: t0, Reason: "x"}
			edit(&b)
			if err := os.WriteFile(d.planName(), d.encodePlan(b), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		reader Binding // how the next start opens the directory
		mangle func(t *testing.T, d *Dir)
		want   string // "" the plan, "none", or in the error
	}{
		{name: "round trip", reader: bind},
		{name: "read under another shard count", reader: Binding{UserID: "111", ShardCount: 16}},
		{name: "re-indented", reader: bind, mangle: editPlan(func(b []byte) []byte {
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				panic(err)
			}
			b, _ = json.Marshal(v) // compact, keys sorted
			return b
		})},
		{name: "missing", reader: bind, mangle: func(t *testing.T, d *Dir) {
			if err := d.RemovePlan(); err != nil {
				t.Fatal(err)
			}
		}, want: "none"},
		{name: "empty file", reader: bind, mangle: editPlan(func([]byte) []byte { return nil }), want: "not a plan record"},
		{name: "corrupt json", reader: bind, mangle: editPlan(func(b []byte) []byte { return b[:len(b)/2] }), want: "not a plan record"},
		{name: "not json", reader: bind, mangle: editPlan(func([]byte) []byte { return []byte("shards=16\n") }), want: "not a plan record"},
		{name: "two values", reader: bind, mangle: editPlan(func(b []byte) []byte { return append(b, b...) }), want: "more than one JSON value"},
		{name: "unknown field", reader: bind, mangle: editPlan(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"version"`), []byte(`"shards": 32, "version"`), 1)
		}), want: "not a plan record"},
		{name: "too large", reader: bind, mangle: editPlan(func(b []byte) []byte {
			return append(b, bytes.Repeat([]byte(" "), maxPlanFile)...)
		}), want: "larger than"},
		{name: "a directory", reader: bind, mangle: func(t *testing.T, d *Dir) {
			d.RemovePlan()
			if err := os.Mkdir(d.planName(), 0o700); err != nil {
				t.Fatal(err)
			}
		}, want: "is a directory"},
		{name: "another version", reader: bind, mangle: forged(func(b *planBody) { b.Version = 2 }), want: "version 2"},
		{name: "another token", reader: Binding{UserID: "111", ShardCount: 8, Token: token(t, "another.token")},
			want: "its mac does not verify: written for another bot token, or edited"},
		{name: "shard count edited", reader: bind, mangle: editPlan(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"shard_count": 16`), []byte(`"shard_count": 32`), 1)
		}), want: "written for another bot token, or edited"},
		{name: "reason edited", reader: bind, mangle: editPlan(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`(ctl)`), []byte(`(cli)`), 1)
		}), want: "written for another bot token, or edited"},
		{name: "mac removed", reader: bind, mangle: editPlan(func(b []byte) []byte {
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				panic(err)
			}
			delete(v, "mac")
			b, _ = json.Marshal(v)
			return b
		}), want: "written for another bot token, or edited"},
		{name: "mac not hex", reader: bind, mangle: editPlan(func(b []byte) []byte {
			i := bytes.Index(b, []byte(`"mac": "`)) + len(`"mac": "`)
			b[i] = 'z'
			return b
		}), want: "written for another bot token, or edited"},
		{name: "another user id", reader: Binding{UserID: "222", ShardCount: 8}, want: "written for another bot (user 111, this is 222)"},
		{name: "no shards", reader: bind, mangle: forged(func(b *planBody) { b.ShardCount = 0 }), want: "shard count 0"},
		{name: "too many shards", reader: bind, mangle: forged(func(b *planBody) { b.ShardCount = wire.MaxShardID + 1 }), want: "shard count 1048577"},
		{name: "no split", reader: bind, mangle: forged(func(b *planBody) { b.ShardsPerCluster = 0 }), want: "exactly one must be set"},
		{name: "both splits", reader: bind, mangle: forged(func(b *planBody) { b.Clusters = 2 }), want: "exactly one must be set"},
		{name: "negative shards per cluster", reader: bind, mangle: forged(func(b *planBody) { b.ShardsPerCluster = -1 }), want: "shards per cluster -1"},
		{name: "negative clusters", reader: bind, mangle: forged(func(b *planBody) { b.ShardsPerCluster, b.Clusters = 0, -4 }), want: "-4 clusters"},
		{name: "more clusters than shards", reader: bind, mangle: forged(func(b *planBody) { b.ShardsPerCluster, b.Clusters = 0, 17 }), want: "17 clusters for 16 shards"},
		{name: "no time", reader: bind, mangle: forged(func(b *planBody) { b.Written = time.Time{} }), want: "no time written"},
		{name: "long reason", reader: bind, mangle: forged(func(b *planBody) { b.Reason = strings.Repeat("r", MaxPlanReason+1) }), want: "reason of 1025 bytes"},
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
			if err := w.WritePlan(reshardPlan()); err != nil {
				t.Fatal(err)
			}
			if tt.mangle != nil {
				tt.mangle(t, w)
			}
			rb := tt.reader
			if rb.Token.Empty() {
				rb.Token = bw.Token
			}
			r, err := Open(dir, rb, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			p, ok, err := r.ReadPlan()
			switch {
			case tt.want == "":
				want := reshardPlan()
				if err != nil || !ok || !p.Written.Equal(want.Written) || p.Written.Location() != time.UTC {
					t.Fatalf("ReadPlan = %+v, %v, %v; want %+v", p, ok, err, want)
				}
				p.Written = want.Written
				if p != want {
					t.Fatalf("ReadPlan = %+v, want %+v", p, want)
				}
			case tt.want == "none":
				if err != nil || ok || p != (Plan{}) {
					t.Fatalf("ReadPlan = %+v, %v, %v; want no plan and no error", p, ok, err)
				}
			case err == nil || ok || p != (Plan{}):
				t.Fatalf("ReadPlan = %+v, %v, %v; want an error with %q", p, ok, err, tt.want)
			case !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), filepath.Join(dir, PlanFile)):
				t.Fatalf("ReadPlan: %v; want an error naming the file, with %q", err, tt.want)
			case strings.Contains(err.Error(), "the.bot.token") || strings.Contains(err.Error(), "another.token"):
				t.Fatalf("the error reveals the token: %v", err)
			}
		})
	}
}

func editPlan(f func([]byte) []byte) func(t *testing.T, d *Dir) {
	return func(t *testing.T, d *Dir) {
		b, err := os.ReadFile(d.planName())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.planName(), f(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWritePlan: the plan file is 0600, readable JSON without the token,
// replaced whole by the next write, and leaves no temporary behind.
func TestWritePlan(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, Binding{UserID: "111", ShardCount: 8, Token: token(t, "the.bot.token")}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WritePlan(reshardPlan()); err != nil {
		t.Fatal(err)
	}
	next := Plan{ShardCount: 32, Clusters: 3, Written: t0.Add(time.Hour).In(time.FixedZone("CET", 3600)),
		Reason: "reshard 16 -> 32 (recommended)"}
	if err := d.WritePlan(next); err != nil { // UserID empty: the Dir's
		t.Fatal(err)
	}
	name := filepath.Join(dir, PlanFile)
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("plan mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(name)
	for _, s := range []string{`"shard_count": 32`, `"clusters": 3`, `"user_id": "111"`, `"reason": "reshard 16 -> 32 (recommended)"`, `"mac": "`} {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("the plan file does not hold %s:\n%s", s, b)
		}
	}
	if bytes.Contains(b, []byte("the.bot.token")) {
		t.Error("the plan file holds the token")
	}
	p, ok, err := d.ReadPlan()
	next.UserID, next.Written = "111", next.Written.UTC()
	if err != nil || !ok || p != next {
		t.Errorf("ReadPlan = %+v, %v, %v; want the second plan %+v", p, ok, err, next)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %d files after two writes, want 1 (no temporary left)", len(ents))
	}
	if err := d.RemovePlan(); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePlan(); err != nil {
		t.Errorf("RemovePlan of no plan: %v", err)
	}
	if _, ok, err := d.ReadPlan(); ok || err != nil {
		t.Errorf("ReadPlan after RemovePlan = %v, %v; want no plan", ok, err)
	}
}

// TestWritePlanRefuses: WritePlan makes ReadPlan's checks, and writes
// nothing when they fail.
func TestWritePlanRefuses(t *testing.T) {
	d, _ := Open(t.TempDir(), Binding{UserID: "111", ShardCount: 8, Token: token(t, "x.y.z")}, time.Minute)
	ok := reshardPlan()
	tests := []struct {
		name string
		edit func(*Plan)
		want string
	}{
		{"no shards", func(p *Plan) { p.ShardCount = 0 }, "shard count 0"},
		{"too many shards", func(p *Plan) { p.ShardCount = wire.MaxShardID + 1 }, "shard count"},
		{"no split", func(p *Plan) { p.ShardsPerCluster = 0 }, "exactly one"},
		{"both splits", func(p *Plan) { p.Clusters = 4 }, "exactly one"},
		{"more clusters than shards", func(p *Plan) { p.ShardsPerCluster, p.Clusters = 0, 17 }, "17 clusters"},
		{"another bot", func(p *Plan) { p.UserID = "222" }, "another bot"},
		{"no time", func(p *Plan) { p.Written = time.Time{} }, "no time"},
		{"far future", func(p *Plan) { p.Written = t0.AddDate(8000, 0, 0) }, "year 10026"},
		{"long reason", func(p *Plan) { p.Reason = strings.Repeat("r", MaxPlanReason+1) }, "reason of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.edit(&p)
			if err := d.WritePlan(p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("WritePlan = %v, want an error with %q", err, tt.want)
			}
			if _, found, err := d.ReadPlan(); found || err != nil {
				t.Fatalf("ReadPlan after a refused write = %v, %v; want no plan", found, err)
			}
		})
	}
}

// TestSweepLeavesThePlan: Sweep discards records beyond the plan and a
// plan's temporary file a crash left, not the plan record.
func TestSweepLeavesThePlan(t *testing.T) {
	dir := t.TempDir()
	tok := token(t, "the.bot.token")
	big, _ := Open(dir, Binding{UserID: "111", ShardCount: 16, Token: tok}, time.Minute)
	if _, err := big.Write(session(t, 12, nil), t0); err != nil {
		t.Fatal(err)
	}
	if err := big.WritePlan(reshardPlan()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, planTemp+"123.tmp"), []byte("half"), 0o600)
	d, _ := Open(dir, Binding{UserID: "111", ShardCount: 8, Token: tok}, time.Minute)
	if n := d.Sweep(); n != 1 {
		t.Errorf("Sweep removed %d records, want 1 (shard 12 of 16)", n)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != PlanFile {
		t.Errorf("left %v, want the plan only", left)
	}
	if p, ok, err := d.ReadPlan(); err != nil || !ok || p.ShardCount != 16 {
		t.Errorf("ReadPlan after Sweep = %+v, %v, %v; want the plan", p, ok, err)
	}
}
