package cli

import (
	"context"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/ratelimit"
)

// TestTwoSupervisorsShareOneQueue runs one bot on two "machines": each
// supervisor runs half the clusters (-cluster-share), the first serves its
// identify queue and the second uses it. Across both, no bucket breaks the
// pacing, at startup and under an INVALID_SESSION storm.
func TestTwoSupervisorsShareOneQueue(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 64, Shards: 8, MaxConcurrency: 2})
	queueAddr := freeAddr(t)
	env := []string{"DISCORD_TOKEN=" + secretToken}
	plan := []string{"run", "-shards", "8", "-clusters", "4"}
	// The second starts first: it must wait for the queue, not fail.
	b := shardvisor(t, env, append(append(plan, "-cluster-share", "1/2", "-identify-queue-url", "http://"+queueAddr), fastFlags(fake, freeAddr(t))...)...)
	// The second reports each IDENTIFY back, so the queue is exact for it
	// however long its dial after a grant takes (under the race detector,
	// with six processes starting on two cores, up to 250 ms was seen).
	a := shardvisor(t, env, append(append(plan, "-cluster-share", "0/2", "-identify-queue-listen", queueAddr), fastFlags(fake, freeAddr(t))...)...)
	for _, p := range []*proc{a, b} {
		s := p.until(t, "ready", ready)
		if len(s.Clusters) != 2 {
			t.Fatalf("a share of 2 runs %d clusters", len(s.Clusters))
		}
	}
	// The supervisor serving the queue serves its REST limits there too.
	if code, body := postREST(t, queueAddr, `{"key":"GET users/@me"}`); code != http.StatusOK || !strings.Contains(body, "wait_ns") {
		t.Errorf("POST /rest/ticket on -identify-queue-listen = %d %q", code, body)
	}
	if ids := [2]int{a.until(t, "", ready).Clusters[0].ID, b.until(t, "", ready).Clusters[0].ID}; ids != [2]int{0, 2} {
		t.Errorf("shares start at clusters %v, want 0 and 2", ids)
	}
	if n := fake.Record().RESTCalls("PUT applications/{app}/commands", 200); n != 1 {
		t.Errorf("commands registered %d times; only the supervisor running cluster 0 does it", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	base := fake.Record().Identified(-1, discordtest.OutcomeReady)
	for shard := range 8 {
		fake.InvalidSession(shard, false)
	}
	if _, err := fake.WaitFor(ctx, func(r discordtest.Record) bool { return r.Identified(-1, discordtest.OutcomeReady) >= base+8 }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*proc{a, b} {
		p.until(t, "ready after the storm", ready)
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("exit %d", code)
		}
	}
	checkPacing(t, fake.Record())
}

func TestIdentifyQueueMode(t *testing.T) {
	addr := freeAddr(t)
	p := shardvisor(t, []string{"DISCORD_TOKEN="}, "identify-queue", "-listen", addr, "-max-concurrency", "2", "-identify-interval", "50ms")
	get := func(path string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(patience)
		for {
			code, body, err := p.get(path)
			if err == nil {
				return code, body
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", path, err)
			}
			time.Sleep(20 * time.Millisecond) // until it listens
		}
	}
	p.addr = addr
	if code, _ := get("/?shard=3"); code != http.StatusOK {
		t.Errorf("GET /?shard=3 = %d", code)
	}
	if code, body := get("/?shard=x"); code != http.StatusBadRequest || !strings.Contains(body, "shard") {
		t.Errorf("GET /?shard=x = %d %q", code, body)
	}
	if code, body := postREST(t, addr, `{"key":"GET users/@me"}`); code != http.StatusOK || body != `{"wait_ns":0}`+"\n" {
		t.Errorf("POST /rest/ticket = %d %q", code, body)
	}
	if code, body := postREST(t, addr, `{"key":"GET /api/v10/users/@me"}`); code != http.StatusBadRequest || !strings.Contains(body, `"key"`) {
		t.Errorf("POST /rest/ticket with a path for a key = %d %q", code, body)
	}
	if out, code := command(t, nil, "healthcheck", "-addr", addr); code != 0 {
		t.Errorf("healthcheck of the queue: %d %s", code, out)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "shardvisor_identify_grants_total 1") ||
		!strings.Contains(body, "shardvisor_rest_tickets_in_flight 1") || !strings.Contains(body, "shardvisor_rest_global_limit 50") {
		t.Errorf("/metrics = %d, grants or REST tickets not counted", code)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	if out, code := command(t, []string{"DISCORD_TOKEN="}, "identify-queue", "-listen", freeAddr(t)); code != 78 || !strings.Contains(out, "DISCORD_TOKEN") {
		t.Errorf("without a token or -max-concurrency: exit %d %s", code, out)
	}
}

// postREST posts body to the REST limits service's ticket path at addr.
func postREST(t *testing.T, addr, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+ratelimit.PathTicket, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", ratelimit.PathTicket, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
