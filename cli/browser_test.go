package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/internal/harness"
)

// needChromium returns the path of Debian's chromium. It skips the test
// when it is absent, except in CI (CI set), which installs the package
// (.ci/run) and must run the test.
func needChromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found in CI: .ci/run installs Debian's chromium package, which must provide it")
	}
	t.Skip("chromium not found: install Debian's chromium package (apt-get install chromium) to run this test")
	return ""
}

// browser is a headless Chromium driven over the Chrome DevTools
// protocol: one WebSocket to the browser, a flattened session per tab.
type browser struct {
	cmd  *exec.Cmd
	out  *harness.Buffer
	conn *websocket.Conn

	wmu     sync.Mutex // writes to conn
	mu      sync.Mutex
	next    int64
	waiting map[int64]chan cdpReply
	readErr error
	done    chan struct{} // closed when the reader stops
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts chromium headless in its own process group with a
// throwaway profile; the group is killed when the test ends.
func startBrowser(t testing.TB, path string) *browser {
	t.Helper()
	dir := t.TempDir()
	b := &browser{out: &harness.Buffer{}, waiting: map[int64]chan cdpReply{}, done: make(chan struct{})}
	b.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--user-data-dir="+dir, "about:blank")
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { b.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if b.conn != nil {
			b.conn.Close()
			<-b.done
		}
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("chromium's output:\n%s", b.out)
		}
	})
	// Chromium writes its port and the browser's path to DevToolsActivePort.
	var ws string
	deadline := time.Now().Add(patience)
	for ws == "" {
		if raw, err := os.ReadFile(filepath.Join(dir, "DevToolsActivePort")); err == nil {
			if lines := strings.Fields(string(raw)); len(lines) == 2 {
				ws = "ws://127.0.0.1:" + lines[0] + lines[1]
			}
		}
		select {
		case <-exited:
			t.Fatalf("chromium exited at start:\n%s", b.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromium did not open its DevTools port within %v:\n%s", patience, b.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatalf("dial chromium's DevTools at %s: %v", ws, err)
	}
	conn.SetReadLimit(64 << 20) // screenshots
	b.conn = conn
	go b.read()
	return b
}

// read hands each reply to its caller; events are not used.
func (b *browser) read() {
	defer close(b.done)
	for {
		var m struct {
			ID int64 `json:"id"`
			cdpReply
		}
		if err := b.conn.ReadJSON(&m); err != nil {
			b.mu.Lock()
			b.readErr = err
			for _, w := range b.waiting {
				close(w)
			}
			b.waiting = map[int64]chan cdpReply{}
			b.mu.Unlock()
			return
		}
		b.mu.Lock()
		w, ok := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ok {
			w <- m.cdpReply
		}
	}
}

// call sends one command (in session, "" for the browser) and decodes its
// result into out (nil: ignore it).
func (b *browser) call(ctx context.Context, session, method string, params, out any) error {
	b.mu.Lock()
	if b.readErr != nil {
		b.mu.Unlock()
		return fmt.Errorf("%s: browser connection: %w", method, b.readErr)
	}
	b.next++
	id := b.next
	w := make(chan cdpReply, 1)
	b.waiting[id] = w
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b.wmu.Lock()
	err := b.conn.WriteJSON(msg)
	b.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-w:
		switch {
		case !ok:
			return fmt.Errorf("%s: browser connection closed", method)
		case r.Error != nil:
			return fmt.Errorf("%s: %s (%d)", method, r.Error.Message, r.Error.Code)
		case out != nil:
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.waiting, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// tab is one page of the browser.
type tab struct {
	b       *browser
	session string
}

// open opens url in a new tab of width × height CSS pixels (mobile: a
// phone's viewport and touch).
func (b *browser) open(ctx context.Context, url string, width, height int, mobile bool) (*tab, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return nil, err
	}
	tb := &tab{b: b, session: att.SessionID}
	if err := b.call(ctx, tb.session, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, nil); err != nil {
		return nil, err
	}
	return tb, b.call(ctx, tb.session, "Page.navigate", map[string]any{"url": url}, nil)
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into out.
func (tb *tab) eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := tb.b.call(ctx, tb.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	switch {
	case err != nil:
		return err
	case r.Exception != nil:
		return fmt.Errorf("evaluate %q: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	case out == nil || len(r.Result.Value) == 0:
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// until evaluates expr (a boolean) until it is true, failing the test
// after patience with what lastly reports.
func (tb *tab) until(t *testing.T, what, expr, lastly string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for {
		var ok bool
		err := tb.eval(ctx, expr, &ok)
		if err == nil && ok {
			return
		}
		if ctx.Err() != nil {
			var state any
			tb.eval(context.Background(), lastly, &state)
			t.Fatalf("waiting in the browser for %s: not within %v (last error %v); page says %v", what, patience, err, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keys types text into the focused element, as a keyboard would, and
// presses Enter.
func (tb *tab) keys(ctx context.Context, text string) error {
	if err := tb.b.call(ctx, tb.session, "Input.insertText", map[string]any{"text": text}, nil); err != nil {
		return err
	}
	for _, typ := range []string{"keyDown", "keyUp"} {
		ev := map[string]any{"type": typ, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
		if typ == "keyDown" {
			ev["text"] = "\r"
		}
		if err := tb.b.call(ctx, tb.session, "Input.dispatchKeyEvent", ev, nil); err != nil {
			return err
		}
	}
	return nil
}

// screenshot writes the whole page as a PNG to path.
func (tb *tab) screenshot(ctx context.Context, path string) error {
	var r struct {
		Data string `json:"data"`
	}
	if err := tb.b.call(ctx, tb.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		return err
	}
	if len(png) == 0 {
		return errors.New("empty screenshot")
	}
	return os.WriteFile(path, png, 0o644)
}

// jsString quotes s for a JavaScript expression.
func jsString(s string) string { return strconv.Quote(s) }
