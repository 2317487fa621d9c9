package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

// screenshotDir is where TestStatusPageInBrowser writes its screenshots:
// $SHARDVISOR_SCREENSHOT_DIR, else the test's temporary directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("SHARDVISOR_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// observeCells makes the page record, per shard, when its cell first left
// "ready" and when it came back (Date.now(), the test's clock too).
const observeCells = `(() => {
  window.__seen = {};
  new MutationObserver((ms) => {
    for (const m of ms) {
      const d = m.target.dataset, rec = (window.__seen[d.shard] ||= {});
      if (d.state !== "ready" && rec.left === undefined) rec.left = Date.now();
      if (d.state === "ready" && rec.left !== undefined && rec.back === undefined) rec.back = Date.now();
    }
  }).observe(document.getElementById("grid"), {subtree: true, attributes: true, attributeFilter: ["data-state"]});
  return true;
})()`

// TestStatusPageInBrowser drives the page in a real headless Chromium
// against a real supervisor and clusters on the fake Discord: every shard
// shows ready; after a SIGKILL the cluster's cells leave ready and come
// back; the guild lookup names the right shard and cluster, from a link
// and from the keyboard; the page makes no request elsewhere, fits a
// phone's width, and follows prefers-color-scheme. It writes screenshots
// and logs the update latency from the kill to the cells' colour.
func TestStatusPageInBrowser(t *testing.T) {
	chromium := needChromium(t)
	const shards, perCluster = 8, 2
	fake := newFake(t, discordtest.Options{Guilds: 80, Shards: shards, MaxConcurrency: 2})
	addr := freeAddr(t)
	// A restart delay of 3 s (the last -restart-delay wins): the page polls,
	// and a cluster back within one poll would never show as down.
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append(append([]string{"run", "-shards", "auto", "-shards-per-cluster", strconv.Itoa(perCluster)}, fastFlags(fake, addr)...),
			"-restart-delay", "3s")...)
	snap := p.until(t, "ready", ready)

	// A guild on shard 5: cluster 2 in a plan of 2 shards per cluster.
	guild := fake.GuildIDsOf(5, shards)[0]
	id, err := strconv.ParseUint(guild, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	wantShard := int((id >> 22) % shards)
	wantCluster := wantShard / perCluster

	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	defer cancel()
	br := startBrowser(t, chromium)
	page, err := br.open(ctx, "http://"+addr+"/#guild="+guild, 1100, 900, false)
	if err != nil {
		t.Fatal(err)
	}
	readyCells := `document.querySelectorAll("#grid .cell").length === ` + strconv.Itoa(shards) +
		` && document.querySelectorAll("#grid .cell[data-state=ready]").length === ` + strconv.Itoa(shards)
	cellStates := `[...document.querySelectorAll("#grid .cell")].map((c) => c.dataset.shard + ":" + c.dataset.state).join(" ")`
	page.until(t, "every shard ready", readyCells, cellStates)

	// The lookup from the link's #guild=.
	lookupIs := func(shard, cluster int) string {
		return fmt.Sprintf(`(() => { const a = document.querySelector("#answer [data-shard]"); return !!a && a.dataset.shard === "%d" && a.dataset.clusterId === "%d" && a.dataset.state === "ready"; })()`, shard, cluster)
	}
	answerText := `document.getElementById("answer").textContent`
	page.until(t, "the lookup of a linked guild", lookupIs(wantShard, wantCluster), answerText)
	var text string
	page.eval(ctx, answerText, &text)
	t.Logf("lookup of guild %s: %q", guild, text)

	// Nothing was fetched from elsewhere; the page's own weight.
	var res struct {
		Foreign []string `json:"foreign"`
		Size    int      `json:"size"`
	}
	if err := page.eval(ctx, `({foreign: performance.getEntriesByType("resource").map((e) => e.name).filter((n) => new URL(n).origin !== location.origin),
		size: performance.getEntriesByType("navigation")[0].decodedBodySize})`, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Foreign) > 0 {
		t.Errorf("the page fetched from elsewhere: %v", res.Foreign)
	}
	t.Logf("page weight: %d bytes uncompressed, no request to another origin", res.Size)

	// SIGKILL the cluster of shards 2 and 3: their cells leave ready and
	// come back once the replacement's shards are ready.
	if err := page.eval(ctx, observeCells, nil); err != nil {
		t.Fatal(err)
	}
	victim := snap.Clusters[1]
	killed := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	left := `[2, 3].every((id) => window.__seen[id] && window.__seen[id].left !== undefined)`
	page.until(t, "cluster 1's cells to leave ready", left, `JSON.stringify(window.__seen) + " " + `+cellStates)
	dir := screenshotDir(t)
	shot := filepath.Join(dir, "status-page-cluster-down.png")
	if err := page.screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	back := `[2, 3].every((id) => window.__seen[id] && window.__seen[id].back !== undefined)`
	page.until(t, "cluster 1's cells to come back", back, `JSON.stringify(window.__seen) + " " + `+cellStates)
	var seen map[string]struct{ Left, Back int64 }
	if err := page.eval(ctx, `Object.fromEntries(Object.entries(window.__seen).map(([k, v]) => [k, {Left: v.left, Back: v.back}]))`, &seen); err != nil {
		t.Fatal(err)
	}
	for id := range seen {
		if id != "2" && id != "3" {
			t.Errorf("shard %s's cell left ready too; only cluster 1 (shards 2, 3) was killed", id)
		}
	}
	latency := time.Duration(max(seen["2"].Left, seen["3"].Left)-killed.UnixMilli()) * time.Millisecond
	// The supervisor's part: when it recorded the exit (LastExit.At).
	// The kill comes just after a poll (the waits above end on one), so
	// this is about the worst case: a whole poll interval.
	exited := p.until(t, "cluster 1's exit recorded", func(s supervisor.Snapshot) bool { return s.Clusters[1].LastExit != nil })
	noticed := exited.Clusters[1].LastExit.At.Sub(killed)
	t.Logf("update latency: SIGKILL to both cells out of ready %v (goal 1 s): the supervisor recorded the exit in %v, the page (polling every 500 ms, the kill just after a poll) took the rest; back to ready %v after the kill",
		latency, noticed.Round(time.Millisecond), time.Duration(max(seen["2"].Back, seen["3"].Back)-killed.UnixMilli())*time.Millisecond)
	page.until(t, "cluster 1's restart in the events and the table",
		`[...document.querySelectorAll("#events li[data-kind=restart]")].some((li) => li.textContent.includes("cluster 1:") && li.textContent.includes("signal killed"))
		 && document.querySelector("#clusters tr[data-cluster-id='1'] td:nth-child(7)").textContent.startsWith("1 (1 signal)")`,
		`document.getElementById("events").textContent + " | " + document.getElementById("clusters").textContent`)

	// The lookup from the keyboard: Tab reaches the id box first, typing
	// and Enter answer.
	other := fake.GuildIDsOf(0, shards)[0]
	page.eval(ctx, `document.activeElement.blur(); document.getElementById("guild").value = ""; true`, nil)
	if err := br.call(ctx, page.session, "Input.dispatchKeyEvent", map[string]any{"type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}, nil); err != nil {
		t.Fatal(err)
	}
	br.call(ctx, page.session, "Input.dispatchKeyEvent", map[string]any{"type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}, nil)
	var focused string
	page.eval(ctx, `document.activeElement.id`, &focused)
	if focused != "guild" {
		t.Errorf("Tab focused %q first, want the guild id box", focused)
	}
	page.eval(ctx, `document.getElementById("guild").focus(); true`, nil)
	if err := page.keys(ctx, other); err != nil {
		t.Fatal(err)
	}
	page.until(t, "the typed lookup", lookupIs(0, 0), answerText)
	page.eval(ctx, `document.getElementById("guild").value = ""; document.getElementById("guild").focus(); true`, nil)
	if err := page.keys(ctx, "not-a-number"); err != nil {
		t.Fatal(err)
	}
	page.until(t, "an error for a bad id", `!!document.querySelector("#answer [data-error]")`, answerText)
	page.eval(ctx, `document.getElementById("guild").value = ""; document.getElementById("guild").focus(); true`, nil)
	if err := page.keys(ctx, guild); err != nil {
		t.Fatal(err)
	}
	page.until(t, "the lookup again", lookupIs(wantShard, wantCluster), answerText)

	shot = filepath.Join(dir, "status-page.png")
	if err := page.screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)

	// A phone, dark: nothing wider than the screen, and dark colours.
	phone, err := br.open(ctx, "http://"+addr+"/#guild="+guild, 390, 844, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := br.call(ctx, phone.session, "Emulation.setEmulatedMedia", map[string]any{
		"features": []map[string]string{{"name": "prefers-color-scheme", "value": "dark"}}}, nil); err != nil {
		t.Fatal(err)
	}
	phone.until(t, "every shard ready on the phone", readyCells, cellStates)
	var layout struct {
		ScrollWidth, Width int
		Background         string
	}
	phone.eval(ctx, `({ScrollWidth: document.documentElement.scrollWidth, Width: window.innerWidth, Background: getComputedStyle(document.body).backgroundColor})`, &layout)
	if layout.ScrollWidth > layout.Width {
		t.Errorf("on a phone the page is %d px wide in a %d px screen", layout.ScrollWidth, layout.Width)
	}
	if layout.Background != "rgb(13, 17, 23)" {
		t.Errorf("prefers-color-scheme: dark: background %s, want the dark one", layout.Background)
	}
	shot = filepath.Join(dir, "status-page-phone-dark.png")
	if err := phone.screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
}

// TestReshardPageInBrowser drives the page through a real reshard, 8 → 16
// shards: while the next fleet is held in shadow (the fake delays HELLO on
// every new connection), the page shows the reshard's panel above the
// live fleet, its line, and the next fleet's 16 cells and 8 clusters,
// while the live fleet's 8 cells stay ready; the guild lookup says where
// the guild goes; ctl status and status print both fleets; /readyz is 200.
// After the switch the panel is gone and the live grid has 16 ready cells.
// On a phone, dark, the panel fits the screen.
func TestReshardPageInBrowser(t *testing.T) {
	chromium := needChromium(t)
	const from, to, perCluster = 8, 16, 2
	// How long the fake holds each of the next fleet's connections before
	// HELLO: the reshard's "starting" phase lasts at least this long, the
	// page's window to show it (it polls every 500 ms).
	const hold = 8 * time.Second
	fake := newFake(t, discordtest.Options{Guilds: 64, Shards: from, MaxConcurrency: 2})
	addr, sock := freeAddr(t), filepath.Join(t.TempDir(), "control.sock")
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", strconv.Itoa(from), "-shards-per-cluster", strconv.Itoa(perCluster), "-control-socket", sock}, fastFlags(fake, addr)...)...)
	p.until(t, "ready", ready)
	guild := fake.GuildIDsOf(5, from)[0]
	id, err := strconv.ParseUint(guild, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	nextShard := int((id >> 22) % to)

	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	defer cancel()
	br := startBrowser(t, chromium)
	page, err := br.open(ctx, "http://"+addr+"/#guild="+guild, 1100, 900, false)
	if err != nil {
		t.Fatal(err)
	}
	phone, err := br.open(ctx, "http://"+addr+"/", 390, 844, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := br.call(ctx, phone.session, "Emulation.setEmulatedMedia", map[string]any{
		"features": []map[string]string{{"name": "prefers-color-scheme", "value": "dark"}}}, nil); err != nil {
		t.Fatal(err)
	}
	cells := func(grid, state string, n int) string {
		sel := "#" + grid + " .cell"
		if state != "" {
			sel += "[data-state=" + state + "]"
		}
		return fmt.Sprintf(`document.querySelectorAll(%q).length === %d`, sel, n)
	}
	pageState := `document.getElementById("reshard").hidden + " | " + document.getElementById("reshard").textContent + " | " +
		[...document.querySelectorAll("#grid .cell")].map((c) => c.dataset.shard + ":" + c.dataset.state).join(" ")`
	for _, tb := range []*tab{page, phone} {
		tb.until(t, "every live shard ready, no reshard", cells("grid", "ready", from)+` && document.getElementById("reshard").hidden`, pageState)
	}

	fake.SetHelloDelay(hold)
	out, code := command(t, nil, "ctl", "-control-socket", sock, "reshard", strconv.Itoa(to))
	if code != 0 || !strings.Contains(out, fmt.Sprintf("reshard %d → %d shards", from, to)) {
		t.Fatalf("ctl reshard %d: exit %d: %s", to, code, out)
	}
	held := time.Now()

	// Both fleets on the page: the panel's line, the next fleet's cells
	// and clusters, and the live fleet's cells, all still ready.
	line := fmt.Sprintf("Reshard %d → %d shards (ctl, uid %d, pid ", from, to, os.Getuid())
	page.until(t, "the reshard's panel with the next fleet",
		`(() => { const r = document.getElementById("reshard");
		  const l = document.getElementById("reshard-line").textContent;
		  return !r.hidden && l.startsWith(`+jsString(line)+`) && l.includes("), starting: ")
		    && r.querySelector("h3").textContent === "Next fleet (shadow)"
		    && `+cells("next-grid", "", to)+` && document.querySelectorAll("#next-clusters tr").length === `+strconv.Itoa(to/perCluster)+`
		    && document.getElementById("h-shards").textContent === "Shards, live fleet"
		    && `+cells("grid", "ready", from)+` && `+cells("grid", "", from)+`; })()`, pageState)
	var shown struct {
		Line, Label, Answer string
		NextShard           string
		Above               bool
	}
	if err := page.eval(ctx, `({Line: document.getElementById("reshard-line").textContent,
		Label: document.querySelector("#next-grid .cell").getAttribute("aria-label"),
		Answer: document.getElementById("answer").textContent,
		NextShard: (document.querySelector("#answer [data-next-shard]") || {dataset: {}}).dataset.nextShard || "",
		Above: !!(document.getElementById("reshard").compareDocumentPosition(document.getElementById("clusters")) & Node.DOCUMENT_POSITION_FOLLOWING)})`, &shown); err != nil {
		t.Fatal(err)
	}
	t.Logf("the panel: %q; a next fleet cell: %q; the lookup: %q", shown.Line, shown.Label, shown.Answer)
	if !strings.Contains(shown.Line, fmt.Sprintf("/%d new shards ready, since ", to)) {
		t.Errorf("the reshard's line %q: want N/%d new shards ready, since T", shown.Line, to)
	}
	if !strings.HasPrefix(shown.Label, "next fleet shard 0: ") {
		t.Errorf("a next fleet cell is labelled %q, want it named as the next fleet's", shown.Label)
	}
	if !shown.Above {
		t.Error("the reshard's panel is not above the clusters")
	}
	if shown.NextShard != strconv.Itoa(nextShard) {
		t.Errorf("the lookup during the reshard names next shard %q, want %d: %q", shown.NextShard, nextShard, shown.Answer)
	}
	if code, _, err := p.get("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz during the reshard: %d %v, want 200", code, err)
	}
	for _, args := range [][]string{{"ctl", "-control-socket", sock, "status"}, {"status", "-addr", addr}} {
		out, code := command(t, nil, args...)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("RESHARD  %d → %d shards (ctl, uid %d, pid ", from, to, os.Getuid())) ||
			!strings.Contains(out, fmt.Sprintf("NEXT FLEET (shadow, live at the switch): %d shards in %d clusters", to, to/perCluster)) {
			t.Errorf("%v during the reshard: exit %d, want the reshard's line and the next fleet:\n%s", args, code, out)
		}
	}
	dir := screenshotDir(t)
	shot := filepath.Join(dir, "status-page-reshard.png")
	if err := page.screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	phone.until(t, "the reshard's panel on the phone", `!document.getElementById("reshard").hidden && `+cells("next-grid", "", to), pageState)
	var layout struct{ ScrollWidth, Width int }
	phone.eval(ctx, `({ScrollWidth: document.documentElement.scrollWidth, Width: window.innerWidth})`, &layout)
	if layout.ScrollWidth > layout.Width {
		t.Errorf("on a phone, during a reshard, the page is %d px wide in a %d px screen", layout.ScrollWidth, layout.Width)
	}
	shot = filepath.Join(dir, "status-page-reshard-phone-dark.png")
	if err := phone.screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	t.Logf("both fleets shown and checked %v after ctl reshard (the next fleet held for %v)", time.Since(held).Round(time.Millisecond), hold)
	fake.SetHelloDelay(0)

	// The switch: the panel goes, the live grid is the 16 new shards.
	page.until(t, "the switch: no panel, 16 live cells ready", `document.getElementById("reshard").hidden && document.getElementById("h-shards").textContent === "Shards" && `+cells("grid", "ready", to)+
		` && `+cells("next-grid", "", 0), pageState)
	p.until(t, "16 shards live and ready", func(s supervisor.Snapshot) bool { return s.ShardCount == to && s.Reshard == nil && s.Ready })
}

// BenchmarkStatusPage64Shards measures what open status pages cost the
// supervisor: the real binary (no race detector) with 64 shards in 8
// clusters on the fake Discord, its CPU time per second of wall time over
// a 10 s window with no page open, then with 10 pages of headless Chromium
// polling /status. It also reports /status's size. Run with
// `go test -run - -bench StatusPage -benchtime 1x ./cli/`.
func BenchmarkStatusPage64Shards(b *testing.B) {
	chromium := needChromium(b)
	bin := buildShardvisor(b)
	const window = 10 * time.Second
	fake, err := discordtest.NewServer(discordtest.Options{Guilds: 640, Shards: 64, MaxConcurrency: 16,
		IdentifyInterval: 100 * time.Millisecond, IdentifyTolerance: tolerance, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	addr := freeAddr(b)
	cmd := exec.Command(bin, "run", "-api-url", fake.URL(), "-shards", "auto", "-clusters", "8",
		"-identify-interval", "100ms", "-metrics-addr", addr, "-log-level", "warn")
	cmd.Env = append(os.Environ(), "DISCORD_TOKEN="+fake.Token())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	pollReady(b, addr, http.StatusOK)
	time.Sleep(2 * time.Second) // let the READYs and guilds settle
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	pid := cmd.Process.Pid
	measure := func() float64 {
		before, t0 := procCPU(b, pid), time.Now()
		time.Sleep(window)
		return float64(procCPU(b, pid)-before) / float64(time.Since(t0)) * 1000 // ms of CPU per s
	}
	var idle, open float64
	for range b.N {
		idle += measure()
		br := startBrowser(b, chromium)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var tabs []*tab
		for range 10 {
			tb, err := br.open(ctx, "http://"+addr+"/", 1100, 900, false)
			if err != nil {
				b.Fatal(err)
			}
			tabs = append(tabs, tb)
		}
		for _, tb := range tabs {
			for ok := false; !ok; time.Sleep(100 * time.Millisecond) {
				if err := tb.eval(ctx, `document.querySelectorAll("#grid .cell[data-state=ready]").length === 64`, &ok); err != nil {
					b.Fatal(err)
				}
			}
		}
		open += measure()
		cancel()
	}
	b.ReportMetric(idle/float64(b.N), "cpu-ms/s-no-page")
	b.ReportMetric(open/float64(b.N), "cpu-ms/s-10-pages")
	b.ReportMetric(float64(len(body)), "status-bytes")
}

// procCPU is a process's user and system CPU time, from /proc/PID/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command's closing parenthesis: utime and stime are
	// the 12th and 13th, in clock ticks (100 per second on Linux).
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}
