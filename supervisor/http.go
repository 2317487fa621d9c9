package supervisor

import (
	"encoding/json"
	"net/http"
	"time"
)

// healthWithin is how recently the main loop must have turned for /healthz.
const healthWithin = 10 * time.Second

// Handler serves the supervisor's status endpoints:
//
//	/healthz  200 while the supervisor's main loop turns (liveness)
//	/readyz   200 when every cluster is ready, else 503 (readiness)
//	/status   the whole status as JSON (what `shardvisor status` shows)
//	/         the live status page (page.go), which reads /status
//	/fleet/stats        every cluster's stats, through a fleet call (fleethttp.go)
//	/fleet/guilds/{id}  a guild's shard and cluster, and what that cluster has of it
//	POST /fleet/forward fleet calls from peer supervisors, with the fleet secret
//
// and metrics, if not nil, at /metrics.
func (s *Supervisor) Handler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !s.Healthy(healthWithin) {
			http.Error(w, "supervisor loop stalled\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		snap := s.store.Snapshot()
		if !snap.Ready {
			http.Error(w, "not ready: "+snap.Summary()+"\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready: " + snap.Summary() + "\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Snapshot())
	})
	s.pageRoutes(mux)
	s.fleetRoutes(mux)
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}
