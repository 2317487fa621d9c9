package supervisor

import (
	_ "embed"
	"net/http"
	"time"
)

// pageHTML is the live status page: one file, its style and script inline,
// so that it works on a machine without internet and makes no request but
// GET /status. TestPageWeight keeps it under pageLimit.
//
//go:embed page/index.html
var pageHTML []byte

// pageLimit is the most the page may weigh, uncompressed.
const pageLimit = 100 << 10

// IdentifyStatus is the local identify queue in /status.
type IdentifyStatus struct {
	// Waiting is how many shards wait for their turn, per bucket
	// (shard_id % max_concurrency).
	Waiting []int `json:"waiting"`
	// Leased counts turns handed out whose IDENTIFY is not yet reported.
	Leased int `json:"leased"`
	// SessionStartsLeft and SessionStartLimit are Discord's
	// session_start_limit as the queue counts it; -1 before Discord's
	// first answer.
	SessionStartsLeft int       `json:"session_starts_left"`
	SessionStartLimit int       `json:"session_start_limit"`
	ResetAt           time.Time `json:"reset_at,omitzero"`
	Reserve           int       `json:"reserve"`
	// Held is true while every turn waits for the budget.
	Held bool `json:"held"`
}

// Snapshot is the store's snapshot with the identify queue's state, as
// /status serves it.
func (s *Supervisor) Snapshot() Snapshot {
	snap := s.store.Snapshot()
	if s.cfg.QueueStats != nil {
		st := s.cfg.QueueStats()
		snap.Identify = &IdentifyStatus{Waiting: st.Waiting, Leased: st.Leased,
			SessionStartsLeft: st.Budget.Remaining, SessionStartLimit: st.Budget.Total,
			ResetAt: st.Budget.ResetAt, Reserve: st.Reserve, Held: st.Held}
	}
	return snap
}

// pageRoutes serves the page at / (only there: other paths stay 404). Like
// everything on the metrics port it only reads: the port has no
// authentication. Changes go through the control socket (control.go).
func (s *Supervisor) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		// Nothing but this origin, and no framing: the page needs no more.
		h.Set("Content-Security-Policy", "default-src 'none'; connect-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		w.Write(pageHTML)
	})
}
