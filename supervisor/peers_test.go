package supervisor

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/internal/secret"
)

// TestForwardNeedsTheSecret: POST /fleet/forward is refused without a
// fleet secret configured (403), and with one, without it or with another
// (401).
func TestForwardNeedsTheSecret(t *testing.T) {
	newSup := func(fleetSecret string) *Supervisor {
		plan, _ := NewPlan(PlanConfig{Shards: 2, Clusters: 2, ClusterIDs: []int{0}})
		q, _ := identify.New(identify.Config{MaxConcurrency: 1, Interval: time.Second}, nil, nil)
		tok, _ := secret.NewToken("t")
		cfg := Config{Plan: plan, Launcher: &fleetLauncher{}, Queue: q, Token: tok,
			Policy:          RestartPolicy{Delay: time.Second, MaxDelay: time.Minute, Stable: time.Minute},
			ShutdownTimeout: time.Second, ChildWatchdog: time.Minute}
		if fleetSecret != "" {
			cfg.FleetSecret, _ = secret.NewToken(fleetSecret)
		}
		s, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	post := func(s *Supervisor, auth string) (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/fleet/forward", strings.NewReader(`{"name":"x","clusters":[0],"timeout_ns":1000000000}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.Handler(nil).ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := post(newSup(""), "Bearer anything"); code != http.StatusForbidden || !strings.Contains(body, "no fleet secret") {
		t.Errorf("without a fleet secret: %d %q, want 403", code, body)
	}
	s := newSup("s3cret")
	for _, auth := range []string{"", "s3cret", "Bearer s3cre", "Bearer s3cretx", "Basic s3cret"} {
		if code, body := post(s, auth); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d %q, want 401", auth, code, body)
		}
	}
	// With the secret: cluster 0 is this supervisor's, not running here:
	// its answer says so.
	if code, body := post(s, "Bearer s3cret"); code != http.StatusOK || !strings.Contains(body, "unavailable") {
		t.Errorf("with the secret: %d %q, want 200 with cluster 0 unavailable", code, body)
	}
}
