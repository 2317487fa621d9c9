package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shardvisor/shardvisor/internal/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustToken(t testing.TB, v string) secret.Token {
	tok, err := secret.NewToken(v)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sampleMessages is one valid message of each type; also the fuzz seeds.
func sampleMessages(t testing.TB) []Message {
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	return append([]Message{
		&Hello{ClusterID: 3, PID: 4242, ShardIDs: []int{15, 16, 17}, Build: "v1.0.0"},
		&Welcome{Token: mustToken(t, "abc.def.ghi"), Fleet: true},
		&Welcome{Token: mustToken(t, "abc.def.ghi")},
		&Welcome{Token: mustToken(t, "abc.def.ghi"), Handoff: true},
		&Welcome{Token: mustToken(t, "abc.def.ghi"), Handoff: true, HandoffCause: CauseCrash, Checkpoint: true},
		&Welcome{Token: mustToken(t, "abc.def.ghi"), Fleet: true, RESTTickets: true},
		&Welcome{Token: mustToken(t, "abc.def.ghi"), Fleet: true, RESTTickets: true, Shadow: true},
		&Hello{ClusterID: 1, PID: 7, ShardIDs: []int{2}, Handoff: true},
		&Status{Shards: []ShardStatus{
			{ID: 15, State: ShardReady, Since: at, Latency: 41 * time.Millisecond, Guilds: 2400, LastIdentify: at},
			{ID: 16, State: ShardQueued, Since: at},
		}},
		&IdentifyRequest{Shard: 15, Seq: 7},
		&IdentifyGrant{Shard: 15, Seq: 7, Delay: 250 * time.Millisecond},
		&IdentifyDone{Shard: 15, Seq: 7, Sent: true},
		&MetricsRequest{ID: 99},
		&Metrics{ID: 99, Data: []byte{1, 2, 3}},
		&Fatal{Shard: 15, Code: 4014, Reason: "disallowed intents"},
		&HandoffRequest{},
		&HandoffShard{Shard: 15, SessionID: mustToken(t, "0123abcd"), Seq: 42, ResumeURL: "wss://gateway-us-east1-b.discord.gg", Snapshot: []byte{9, 8, 7}, More: true},
		&HandoffShard{Shard: 16, Reason: "no session"},
		&HandoffEnd{Shards: 2},
		&HandoffAbort{Reason: "the new process exited"},
		&SessionCheckpoint{Shards: []HandoffShard{{Shard: 15, SessionID: mustToken(t, "0123abcd"), Seq: 42, ResumeURL: "wss://gateway-us-east1-b.discord.gg"}}},
		&RESTTicket{ID: 7, Key: "POST channels/1150000000000000001/messages"},
		&RESTGrant{ID: 7, Wait: 120 * time.Millisecond},
		&RESTReport{Key: "POST channels/1150000000000000001/messages", Status: 429, Bucket: "abcd1234", Limit: 5,
			ResetAfter: 4200 * time.Millisecond, RetryAfter: 4200 * time.Millisecond, Scope: "user"},
		&Live{},
	}, fleetSamples()...)
}

func TestRoundTrip(t *testing.T) {
	var buf []byte
	msgs := sampleMessages(t)
	for _, m := range msgs {
		var err error
		if buf, err = Encode(buf, m); err != nil {
			t.Fatalf("Encode(%T): %v", m, err)
		}
	}
	r := bytes.NewReader(buf)
	for _, want := range msgs {
		typ, p, err := ReadFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(typ, p)
		if err != nil {
			t.Fatalf("Decode(%s): %v", typ, err)
		}
		if w, ok := want.(*HandoffShard); ok {
			g := got.(*HandoffShard)
			if g.SessionID.Reveal() != w.SessionID.Reveal() || fmt.Sprint(g) != fmt.Sprint(w) || !bytes.Equal(g.Snapshot, w.Snapshot) {
				t.Errorf("handoff round trip: got %v", g)
			}
			continue
		}
		if w, ok := want.(*SessionCheckpoint); ok {
			if fmt.Sprint(got.(*SessionCheckpoint).Shards) != fmt.Sprint(w.Shards) ||
				got.(*SessionCheckpoint).Shards[0].SessionID.Reveal() != w.Shards[0].SessionID.Reveal() {
				t.Errorf("checkpoint round trip: got %v", got)
			}
			continue
		}
		if w, ok := want.(*Welcome); ok {
			g := got.(*Welcome)
			if g.Token.Reveal() != w.Token.Reveal() || g.Fleet != w.Fleet || g.Handoff != w.Handoff ||
				g.HandoffCause != w.HandoffCause || g.Checkpoint != w.Checkpoint ||
				g.RESTTickets != w.RESTTickets || g.Shadow != w.Shadow {
				t.Errorf("welcome round trip: got %+v", g)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", typ, got, want)
		}
	}
	if _, _, err := ReadFrame(r); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func frame(version, typ byte, length uint32, payload string) []byte {
	return append([]byte{version, typ, byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length)}, payload...)
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"version", frame(2, 1, 2, "{}"), "protocol version 2"},
		{"unknown type", frame(1, 200, 2, "{}"), "unknown message type 200"},
		{"type zero", frame(1, 0, 2, "{}"), "unknown message type 0"},
		{"oversized", frame(1, byte(TypeHello), MaxSmall+1, ""), "exceeds the limit"},
		{"huge length", frame(1, byte(TypeMetrics), 1<<31, ""), "exceeds the limit"},
		{"truncated", frame(1, byte(TypeHello), 10, "{}"), "unexpected EOF"},
		{"not json", frame(1, byte(TypeHello), 3, "abc"), "decode hello"},
		{"trailing", frame(1, byte(TypeIdentifyRequest), 14, `{"shard":1}{}x`), "decode identify-request"},
		{"null", frame(1, byte(TypeHello), 4, "null"), "cluster id"[:0] + "pid 0"},
		{"wrong field type", frame(1, byte(TypeIdentifyRequest), 13, `{"shard":"1"}`), "decode identify-request"},
		{"negative shard", frame(1, byte(TypeIdentifyRequest), 12, `{"shard":-1}`), "shard id -1"},
		{"bad state", frame(1, byte(TypeStatus), 35, `{"shards":[{"id":1,"state":"zzz"}]}`), `unknown state "zzz"`},
		{"short metrics", frame(1, byte(TypeMetrics), 3, "abc"), "has no id"},
		{"fatal code", frame(1, byte(TypeFatal), 22, `{"shard":0,"code":200}`), "close code 200"},
		{"welcome without token", frame(1, byte(TypeWelcome), 2, `{}`), "no token"},
		{"welcome bad token", frame(1, byte(TypeWelcome), 15, `{"token":"a b"}`), "white space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, p, err := ReadFrame(bytes.NewReader(tc.in))
			if err == nil {
				_, err = Decode(typ, p)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if tc.name != "truncated" && !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v does not wrap ErrProtocol", err)
			}
		})
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	if _, err := Encode(nil, &Hello{PID: 0, ShardIDs: []int{1}}); err == nil {
		t.Fatal("encoded a hello with pid 0")
	}
	if _, err := Encode(nil, &Metrics{Data: make([]byte, MaxMetrics)}); err == nil {
		t.Fatal("encoded metrics over the limit")
	}
}

func TestWelcomeNeverPrintsToken(t *testing.T) {
	w := &Welcome{Token: mustToken(t, "SeCrEt.token")}
	for _, s := range []string{fmtAll(w), fmtAll(*w)} {
		if strings.Contains(s, "SeCrEt") {
			t.Fatalf("token printed: %s", s)
		}
	}
}

func TestConnOverSocketpair(t *testing.T) {
	pc, cf, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := FileConn(cf.Fd())
	cf.Close()
	if err != nil {
		t.Fatal(err)
	}
	parent, child := NewConn(pc, time.Second), NewConn(cc, time.Second)
	defer parent.Close()
	defer child.Close()

	msgs := sampleMessages(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, m := range msgs {
			if err := child.Write(m); err != nil {
				t.Error(err)
				return
			}
		}
		child.Close()
	}()
	for range msgs {
		if _, err := parent.Read(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := parent.Read(); err != io.EOF {
		t.Fatalf("after the child closed: %v, want io.EOF", err)
	}
	wg.Wait()
}

func TestWriteTimesOutOnStuckReader(t *testing.T) {
	pc, cf, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	parent := NewConn(pc, 50*time.Millisecond)
	defer parent.Close()
	// Nobody reads the child's end: the socket buffer fills, then the
	// deadline ends the write instead of blocking forever.
	big := &Metrics{ID: 1, Data: make([]byte, MaxMetrics-16)}
	if err := parent.Write(big); err == nil {
		t.Fatal("write to a peer that never reads did not fail")
	}
}

func TestFileConnRejectsNonSocket(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "regular")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := FileConn(f.Fd()); err == nil {
		t.Fatal("FileConn accepted a regular file")
	}
}

func fmtAll(v any) string { return fmt.Sprintf("%v %+v %#v %s", v, v, v, v) }

func TestMonoTime(t *testing.T) {
	before := time.Now()
	m := Mono()
	if m == 0 {
		t.Fatal("CLOCK_MONOTONIC unreadable")
	}
	got := MonoTime(m)
	if got.Before(before.Add(-time.Millisecond)) || got.After(time.Now().Add(time.Millisecond)) {
		t.Errorf("MonoTime(Mono()) = %v, not now", got)
	}
	if d := MonoTime(m + int64(time.Second)).Sub(got); d < 990*time.Millisecond || d > 1010*time.Millisecond {
		t.Errorf("a reading 1 s later converts %v later", d)
	}
	for _, odd := range []int64{0, m + int64(time.Hour), m - int64(time.Hour)} {
		if d := time.Since(MonoTime(odd)); d < 0 || d > time.Second {
			t.Errorf("MonoTime(%d) is %v from now, want now", odd, d)
		}
	}
}

func TestHandoffShardChunks(t *testing.T) {
	id, _ := secret.NewToken("session-id")
	for _, size := range []int{0, 1, HandoffChunk, HandoffChunk + 1, 3*HandoffChunk - 7} {
		snap := make([]byte, size)
		for i := range snap {
			snap[i] = byte(i * 7)
		}
		m := &HandoffShard{Shard: 5, SessionID: id, Seq: 9, ResumeURL: "ws://x/", Snapshot: snap}
		var got []*HandoffShard
		for c := range m.Chunks() {
			got = append(got, c)
		}
		var joined []byte
		for i, c := range got {
			if err := c.Validate(); err != nil {
				t.Fatalf("%d bytes: chunk %d: %v", size, i, err)
			}
			if c.Shard != 5 || c.More != (i < len(got)-1) || (i == 0) != !c.SessionID.Empty() || (i == 0) != (c.Seq == 9) {
				t.Fatalf("%d bytes: chunk %d is %v", size, i, c)
			}
			joined = append(joined, c.Snapshot...)
		}
		if want := max(1, (size+HandoffChunk-1)/HandoffChunk); len(got) != want || !bytes.Equal(joined, snap) {
			t.Fatalf("%d bytes: %d chunks (want %d), joined equal %t", size, len(got), want, bytes.Equal(joined, snap))
		}
	}
}

func TestRESTValidation(t *testing.T) {
	for name, m := range map[string]Message{
		"empty key":           &RESTTicket{ID: 1},
		"long key":            &RESTTicket{ID: 1, Key: strings.Repeat("a", MaxRESTKey+1)},
		"control byte":        &RESTTicket{ID: 1, Key: "GET a\nb"},
		"negative wait":       &RESTGrant{ID: 1, Wait: -1},
		"wait of days":        &RESTGrant{ID: 1, Wait: 48 * time.Hour},
		"status 42":           &RESTReport{Key: "GET x", Status: 42},
		"negative remaining":  &RESTReport{Key: "GET x", Status: 200, Remaining: -1},
		"negative reset":      &RESTReport{Key: "GET x", Status: 200, ResetAfter: -time.Second},
		"huge retry":          &RESTReport{Key: "GET x", Status: 429, RetryAfter: 1000 * time.Hour},
		"bucket of a novel":   &RESTReport{Key: "GET x", Status: 200, Bucket: strings.Repeat("b", 200)},
		"report without key":  &RESTReport{Status: 200},
		"report with a tab\t": &RESTReport{Key: "GET\tx", Status: 200},
	} {
		if err := m.Validate(); err == nil {
			t.Errorf("%s: %#v validated", name, m)
		}
	}
	if err := (&RESTReport{Key: "GET gateway/bot", Status: 0}).Validate(); err != nil {
		t.Errorf("a report of a request without a response: %v", err)
	}
}

// TestShadowAndLive: Shadow travels as "shadow" and is left out when
// false (an older child ignores it either way); Live is an empty object,
// a small frame of its own type.
func TestShadowAndLive(t *testing.T) {
	for _, shadow := range []bool{false, true} {
		b, err := Encode(nil, &Welcome{Token: mustToken(t, "abc.def.ghi"), Shadow: shadow})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(b), `"shadow":true`); got != shadow || strings.Contains(string(b), `"shadow":false`) {
			t.Errorf("Shadow %t encodes as %q", shadow, b[HeaderSize:])
		}
		typ, p, err := ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(typ, p)
		if err != nil || m.(*Welcome).Shadow != shadow {
			t.Fatalf("decode of Shadow %t: %+v, %v", shadow, m, err)
		}
	}
	b, err := Encode(nil, &Live{})
	if err != nil {
		t.Fatal(err)
	}
	if want := frame(Version, byte(TypeLive), 2, "{}"); !bytes.Equal(b, want) {
		t.Errorf("Live encodes as %q, want %q", b, want)
	}
	if TypeLive.String() != "live" || MaxPayload(TypeLive) != MaxSmall {
		t.Errorf("type %d is %q with a limit of %d", TypeLive, TypeLive, MaxPayload(TypeLive))
	}
	for _, payload := range []string{"{}", "null", `{"later":1}`} {
		m, err := Decode(TypeLive, []byte(payload))
		if _, ok := m.(*Live); err != nil || !ok {
			t.Errorf("Decode(live, %s) = %v, %v", payload, m, err)
		}
	}
	if _, err := Decode(TypeLive, []byte("[]")); !errors.Is(err, ErrProtocol) {
		t.Errorf("a live frame holding a list: %v, want a protocol error", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader(frame(Version, byte(TypeLive), MaxSmall+1, ""))); !errors.Is(err, ErrProtocol) {
		t.Errorf("an oversized live frame: %v", err)
	}
}
