package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-nope"}, {"-guilds", "x"}, {"-guilds=-1"}, {"-shards=0"}, {"extra"}, {"-event-rate=-1"},
		{"-privileged-intents", "guild_members,admin"}, {"-identify-interval", "5"}, {"-send-rate-limit=0"},
	} {
		var stderr strings.Builder
		err := serve(context.Background(), args, io.Discard, &stderr)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if err := serve(context.Background(), []string{"-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("-h: %v", err)
	}
	err := serve(context.Background(), []string{"-listen", "256.1.1.1:0"}, io.Discard, io.Discard)
	var ue usageError
	if err == nil || errors.As(err, &ue) {
		t.Errorf("unusable address: %v, want a plain error", err)
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"-guilds", "3", "-privileged-intents", "message_content", "-token", "tok"}, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var url string
	for sc.Scan() {
		if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "shardvisor -api-url "); ok {
			url = u
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if url == "" {
		t.Fatal("no -api-url line printed")
	}
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url+"/api/v10/gateway/bot", nil)
	req.Header.Set("Authorization", "Bot tok")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("gateway/bot: %d", resp.StatusCode)
	}
	resp, err = client.Post(url+"/_fake/event-rate", "application/json", strings.NewReader(`{"per_shard_per_second":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("control event-rate: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
}

// The real entry point stops cleanly (exit 0) on SIGTERM and exits 2 on a
// bad flag. It runs in a child process: this test binary, re-executed.
func TestSignalsAndExitCodes(t *testing.T) {
	if os.Getenv("FAKEDISCORD_MAIN") != "" {
		t.Skip("child")
	}
	child := func(args ...string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperMain$", "--"}, args...)...)
		cmd.Env = append(os.Environ(), "FAKEDISCORD_MAIN=1")
		return cmd
	}
	bad := child("-guilds=nope")
	if err := bad.Run(); bad.ProcessState == nil || bad.ProcessState.ExitCode() != 2 {
		t.Errorf("bad flag: %v, exit %v", err, bad.ProcessState)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := child("-guilds", "2")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		started := false
		for sc.Scan() {
			if strings.Contains(sc.Text(), "-api-url") {
				started = true
				break
			}
		}
		if !started {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("child printed no URL")
		}
		cmd.Process.Signal(sig)
		go io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil {
			t.Errorf("%v: child exited with %v", sig, err)
		}
	}
}

// TestHelperMain is main in a child process of TestSignalsAndExitCodes.
func TestHelperMain(t *testing.T) {
	if os.Getenv("FAKEDISCORD_MAIN") == "" {
		t.Skip("child process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Args = append([]string{"fakediscord"}, args...)
	main()
	os.Exit(0)
}
