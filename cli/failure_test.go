package cli

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/supervisor"
)

func TestDisallowedIntentsExit78WithoutRestart(t *testing.T) {
	fake := newFake(t, discordtest.Options{Shards: 4})
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "4", "-shards-per-cluster", "2", "-intents", "default,message_content"}, fastFlags(fake, freeAddr(t))...)...)
	if code := p.wait(t); code != 78 {
		t.Fatalf("exit %d, want 78", code)
	}
	out := p.out.String()
	if !strings.Contains(out, "4014") || !strings.Contains(out, "developer portal") {
		t.Errorf("the logs do not say what 4014 means or what to do:\n%s", out)
	}
	if strings.Contains(out, "starting it again") {
		t.Errorf("a cluster was restarted after a fatal close")
	}
	perShard := map[int]int{}
	for _, id := range fake.Record().Identifies {
		if perShard[id.Shard]++; perShard[id.Shard] > 1 {
			t.Errorf("shard %d identified more than once: a fatal close must not be retried", id.Shard)
		}
	}
}

func TestRefusedTokenExit78(t *testing.T) {
	fake := newFake(t, discordtest.Options{})
	out, code := command(t, []string{"DISCORD_TOKEN=NoT.ThE.ToKeN"}, append([]string{"run"}, fastFlags(fake, freeAddr(t))...)...)
	if code != 78 || !strings.Contains(out, "401") || !strings.Contains(out, "token") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	if strings.Contains(out, "NoT.ThE") {
		t.Fatalf("the refused token is printed:\n%s", out)
	}
}

func TestConfigurationErrorsExit78(t *testing.T) {
	tok := []string{"DISCORD_TOKEN=" + secretToken}
	plan := []string{"run", "-max-concurrency", "1", "-metrics-addr", ""}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"no token", nil, plan, "DISCORD_TOKEN"},
		{"no token points at the demo", nil, plan, "make demo"},
		{"unknown flag", tok, []string{"run", "-nope"}, "-nope"},
		{"unknown mode", tok, []string{"serve"}, `unknown mode "serve"`},
		{"zero shards", tok, append(plan, "-shards", "0"), "-shards"},
		{"shards not a number", tok, append(plan, "-shards", "many"), "-shards"},
		{"more clusters than shards", tok, append(plan, "-shards", "4", "-clusters", "5"), "-clusters: 5 clusters for 4 shards"},
		{"both splits", tok, append(plan, "-shards", "4", "-clusters", "2", "-shards-per-cluster", "2"), "both set"},
		{"cluster id out of range", tok, append(plan, "-shards", "10", "-cluster-ids", "2"), "-cluster-ids: cluster 2 is not in the plan"},
		{"cluster ids garbage", tok, append(plan, "-shards", "10", "-cluster-ids", "a"), "-cluster-ids"},
		{"log level", tok, append(plan, "-log-level", "loud"), "-log-level"},
		{"intents", tok, append(plan, "-intents", "everything"), "-intents"},
		{"state cache", tok, append(plan, "-state-cache", "hats"), "-state-cache"},
		{"api url", tok, append(plan, "-api-url", "discord.com"), "-api-url"},
		{"session start reserve negative", tok, append(plan, "-session-start-reserve", "-1"), "-session-start-reserve"},
		{"session start reserve garbage", tok, append(plan, "-session-start-reserve", "some"), "-session-start-reserve"},
		{"restart delays", tok, append(plan, "-restart-delay", "1m", "-restart-max-delay", "1s"), "-restart-max-delay"},
		{"env variable", append(tok, "SHARDVISOR_SHARDS=zero"), plan, "-shards"},
		{"flags win over env", append(tok, "SHARDVISOR_LOG_LEVEL=loud"), append(plan, "-log-level", "info", "-shards", "0"), "-shards"},
		{"token file missing", nil, append(plan, "-token-file", "/nonexistent/token"), "token file"},
		{"cluster without identity", nil, []string{"cluster"}, "SHARDVISOR_CLUSTER_ID is not set"},
		{"cluster with bad shard ids", []string{"SHARDVISOR_CLUSTER_ID=0", "SHARDVISOR_SHARD_IDS=0,7", "SHARDVISOR_SHARD_COUNT=4"}, []string{"cluster"}, "shard 7 out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := command(t, append([]string{"DISCORD_TOKEN="}, tc.env...), tc.args...)
			if code != 78 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 78 with %q in:\n%s", code, tc.want, out)
			}
			if n := strings.Count(strings.TrimSpace(out), "\n"); n > 0 {
				t.Errorf("%d lines; a configuration error is one clear line:\n%s", n+1, out)
			}
		})
	}
}

func TestHungConnectRestartsTheCluster(t *testing.T) {
	fake := newFake(t, discordtest.Options{Shards: 2})
	// discordgo's Open deadlocks when op 7 arrives instead of READY.
	fake.ReconnectInsteadOfReady(0)
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "2", "-shards-per-cluster", "1", "-shard-connect-timeout", "1s"}, fastFlags(fake, freeAddr(t))...)...)
	snap := p.until(t, "ready after the hung cluster was restarted", func(s supervisor.Snapshot) bool {
		return s.Ready && s.Clusters[0].Generation >= 2
	})
	if c := snap.Clusters[0]; c.LastExit == nil || c.LastExit.Code != 1 || snap.Clusters[1].Restarts != 0 {
		t.Errorf("cluster 0 last exit %+v; cluster 1 restarts %d", c.LastExit, snap.Clusters[1].Restarts)
	}
	if !strings.Contains(p.out.String(), "gateway connect hung") {
		t.Errorf("the hang is not logged")
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestStandaloneCluster(t *testing.T) {
	fake := newFake(t, discordtest.Options{Shards: 4, Guilds: 12})
	env := []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_CLUSTER_ID=0", "SHARDVISOR_SHARD_IDS=0,1", "SHARDVISOR_SHARD_COUNT=4"}
	p := shardvisor(t, env, "cluster", "-api-url", fake.URL(), "-identify-interval", interval.String(), "-max-concurrency", "1")
	ctx := t.Context()
	if _, err := fake.WaitFor(ctx, func(r discordtest.Record) bool {
		return r.Shard(0, 4).Live == 1 && r.Shard(1, 4).Live == 1
	}); err != nil {
		t.Fatal(err)
	}
	if n := fake.Record().RESTCalls("PUT applications/{app}/commands", 200); n != 1 {
		t.Errorf("cluster 0 alone registered commands %d times, want 1", n)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	checkPacing(t, fake.Record())
}

// TestSystemdNotify runs the supervisor with a real notify socket and
// checks what it tells systemd, and that only the supervisor talks to it.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, _ := conn.SyscallConn()
	raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) })
	type msg struct {
		pid   int32
		state string
	}
	msgs := make(chan msg, 1024)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				close(msgs)
				return
			}
			var pid int32
			if scms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil && len(scms) > 0 {
				if cred, err := syscall.ParseUnixCredentials(&scms[0]); err == nil {
					pid = cred.Pid
				}
			}
			msgs <- msg{pid, string(buf[:n])}
		}
	}()
	fake := newFake(t, discordtest.Options{Shards: 4})
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken, "NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"},
		append([]string{"run", "-shards", "4", "-shards-per-cluster", "2"}, fastFlags(fake, freeAddr(t))...)...)
	expect := func(what string, match func(string) bool) msg {
		t.Helper()
		deadline := time.After(patience)
		for {
			select {
			case m := <-msgs:
				if m.pid != 0 && m.pid != int32(p.cmd.Process.Pid) {
					t.Errorf("pid %d (not the supervisor) sent %q", m.pid, m.state)
				}
				if match(m.state) {
					return m
				}
			case <-deadline:
				t.Fatalf("systemd never got %s", what)
			}
		}
	}
	has := func(s string) func(string) bool { return func(m string) bool { return strings.Contains(m, s) } }
	expect("a STATUS", has("STATUS=0/4 shards ready"))
	expect("READY=1 with the status", func(m string) bool {
		return strings.Contains(m, "READY=1") && strings.Contains(m, "STATUS=4/4 shards ready, 2/2 clusters")
	})
	if code, _, _ := p.get("/readyz"); code != 200 {
		t.Errorf("READY=1 sent while /readyz says %d", code)
	}
	for range 3 { // WatchdogSec=0.4s: a ping at least every 0.2 s
		expect("WATCHDOG=1", has("WATCHDOG=1"))
	}
	p.signal(t, syscall.SIGTERM)
	expect("STOPPING=1", has("STOPPING=1"))
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
