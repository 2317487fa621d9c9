package cluster

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardvisor/shardvisor/discordtest"
)

// secretPayload stands for what discordgo's arguments may quote: a frame
// with a session id in it.
const secretPayload = `{"op":0,"d":{"session_id":"SECRET-SESSION-ID","token":"SECRET-TOKEN"}}`

// argsFor builds arguments for format's verbs, each quoting the payload
// where it can.
func argsFor(format string) []any {
	var a []any
	for _, v := range regexp.MustCompile(`%#?[a-z]`).FindAllString(format, -1) {
		switch v {
		case "%d":
			a = append(a, 42)
		case "%v":
			a = append(a, 41*time.Second)
		case "%#v":
			a = append(a, &discordgo.Event{Operation: 9, RawData: []byte(secretPayload)})
		default:
			a = append(a, secretPayload)
		}
	}
	return a
}

// syncBuffer is a bytes.Buffer for log handlers written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newTestWarnings(t *testing.T) (*gatewayWarnings, *syncBuffer) {
	t.Helper()
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil)).With("cluster_id", 3)
	return newGatewayWarnings(log, prometheus.NewPedanticRegistry()), &buf
}

// checkClean fails if out has anything of discordgo's own making.
func checkClean(t *testing.T, out string) {
	t.Helper()
	for _, bad := range []string{"SECRET", "session_id", "discordgo.Event", "RawData", "%!", "json.RawMessage", "discordgo:"} {
		if strings.Contains(out, bad) {
			t.Errorf("log has %q:\n%s", bad, out)
		}
	}
}

func TestDiscordgoLinesInOurWords(t *testing.T) {
	for format, k := range discordgoFormats {
		t.Run(k.name, func(t *testing.T) {
			w, buf := newTestWarnings(t)
			for range 3 {
				w.logf(discordgo.LogWarning, 2, format, argsFor(format)...)
			}
			out := buf.String()
			if n := strings.Count(out, "\n"); n != 1 {
				t.Errorf("%d lines for 3 of the same kind within a minute, want 1:\n%s", n, out)
			}
			for _, want := range []string{"cluster_id=3", "shard_id=-1", "kind=" + k.name, k.msg} {
				if !strings.Contains(out, want) {
					t.Errorf("log lacks %q:\n%s", want, out)
				}
			}
			checkClean(t, out)
			if got := testutil.ToFloat64(w.total.WithLabelValues(k.name)); got != 3 {
				t.Errorf("shardvisor_gateway_warnings_total{kind=%q} = %v, want 3", k.name, got)
			}
		})
	}
}

func TestDiscordgoOpcodeIsKept(t *testing.T) {
	w, buf := newTestWarnings(t)
	f := "unknown Op: %d, Seq: %d, Type: %s, Data: %s, message: %s"
	w.logf(discordgo.LogWarning, 2, f, argsFor(f)...)
	f = "Expected READY/RESUMED, instead got:\n%#v\n"
	w.logf(discordgo.LogWarning, 2, f, argsFor(f)...)
	f = "haven't gotten a heartbeat ACK in %v, triggering a reconnection"
	w.logf(discordgo.LogError, 2, f, argsFor(f)...)
	out := buf.String()
	for _, want := range []string{"kind=unknown_op op=42", "kind=unexpected_first_reply op=9", "level=ERROR", "since=41s"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestUnknownDiscordgoLineKeepsNoArguments(t *testing.T) {
	w, buf := newTestWarnings(t)
	w.logf(discordgo.LogError, 2, "something new: %s", secretPayload)
	w.logf(discordgo.LogInformational, 2, "Identify Packet: \n%#v", secretPayload) // dropped
	out := buf.String()
	if !strings.Contains(out, "kind=other") || !strings.Contains(out, `format="something new: %s"`) || strings.Count(out, "\n") != 1 {
		t.Errorf("want one line of kind other with the format only:\n%s", out)
	}
	checkClean(t, out)
	if got := testutil.ToFloat64(w.total.WithLabelValues(kindOther)); got != 1 {
		t.Errorf("other = %v, want 1 (lower levels are not counted)", got)
	}
}

func TestDiscordgoLinesAtMostOnceAMinutePerKind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, buf := newTestWarnings(t)
		bin := "error uncompressing websocket message, %s"
		op := "unknown Op: %d, Seq: %d, Type: %s, Data: %s, message: %s"
		lines := func() int { return strings.Count(buf.String(), "\n") }
		w.logf(discordgo.LogError, 2, bin, nil)
		w.logf(discordgo.LogWarning, 2, op, argsFor(op)...) // another kind: its own line
		if lines() != 2 {
			t.Fatalf("want a line for each kind:\n%s", buf)
		}
		time.Sleep(30 * time.Second)
		w.logf(discordgo.LogError, 2, bin, nil)
		w.logf(discordgo.LogError, 2, bin, nil)
		if lines() != 2 {
			t.Fatalf("logged again within a minute:\n%s", buf)
		}
		time.Sleep(30 * time.Second)
		w.logf(discordgo.LogError, 2, bin, nil)
		if lines() != 3 || !strings.Contains(buf.String(), "kind=binary_frame suppressed=2") {
			t.Fatalf("want a line after a minute counting the 2 held back:\n%s", buf)
		}
		if got := testutil.ToFloat64(w.total.WithLabelValues(kindBinaryFrame)); got != 4 {
			t.Errorf("binary_frame = %v, want 4: every line counts", got)
		}
	})
}

func TestOddFramesComeOutInOurWords(t *testing.T) {
	var logs syncBuffer
	fx := startClusterWith(t, discordtest.Options{Shards: 2}, []int{0, 1}, setup{logs: &logs})
	fx.waitStatus(t, "ready", allReady)
	fx.fake.SendMalformed(1, discordtest.MalformedBinary)
	fx.fake.SendMalformed(1, discordtest.MalformedUnknownOp)
	eventually(t, "both odd frames logged", func() bool {
		out := logs.String()
		return strings.Contains(out, "kind=binary_frame") && strings.Contains(out, "kind=unknown_op")
	})
	out := logs.String()
	for _, want := range []string{"shard_id=1 kind=binary_frame", "shard_id=1 kind=unknown_op op=42"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	checkClean(t, out)
	for _, bad := range []string{"not a zlib stream", `"op":42`} {
		if strings.Contains(out, bad) {
			t.Errorf("log quotes the frame (%q):\n%s", bad, out)
		}
	}
	if got := testutil.ToFloat64(fx.c.warnings.total.WithLabelValues(kindUnknownOp)); got != 1 {
		t.Errorf("unknown_op = %v, want 1", got)
	}
}

// TestDiscordgoFormatsAreDiscordgos checks the table against the discordgo
// this module builds with: a format string that changed there would send
// its lines to kind other without a word.
func TestDiscordgoFormatsAreDiscordgos(t *testing.T) {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/bwmarrin/discordgo").Output()
	if err != nil {
		t.Fatalf("find discordgo's source: %v", err)
	}
	var src []byte
	for _, f := range []string{"wsapi.go", "restapi.go"} {
		b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), f))
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	for format, k := range discordgoFormats {
		if !bytes.Contains(src, []byte(strconv.Quote(format))) {
			t.Errorf("%s: format %q is not in discordgo's source", k.name, format)
		}
	}
}

// TestReadErrorsOfAFreezeAreQuiet: while a handoff freezes the shards, the
// gate closes their sockets under discordgo; the read errors that follow
// are expected, neither logged nor counted. Before and after, they are.
func TestReadErrorsOfAFreezeAreQuiet(t *testing.T) {
	w, buf := newTestWarnings(t)
	var frozen atomic.Bool
	w.frozen = frozen.Load
	const format = "error reading from gateway %s websocket, %s"
	frozen.Store(true)
	w.logf(discordgo.LogError, 2, format, argsFor(format)...)
	if out := buf.String(); out != "" {
		t.Errorf("a read error during a freeze was logged:\n%s", out)
	}
	if got := testutil.ToFloat64(w.total.WithLabelValues(kindReadError)); got != 0 {
		t.Errorf("a read error during a freeze was counted: %v", got)
	}
	frozen.Store(false)
	w.logf(discordgo.LogError, 2, format, argsFor(format)...)
	if out := buf.String(); !strings.Contains(out, "kind=read_error") {
		t.Errorf("a read error after the freeze was not logged:\n%s", out)
	}
}
