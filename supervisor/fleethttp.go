package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// Built-in fleet requests every cluster answers (cluster.StatsRequest and
// cluster.GuildRequest; the supervisor does not import the cluster).
const (
	statsRequest = "shardvisor.stats"
	guildRequest = "shardvisor.guild"
)

// fleetHTTPTimeout bounds the fleet calls behind the HTTP endpoints.
const fleetHTTPTimeout = 3 * time.Second

// FleetAnswerJSON is one cluster's answer in the HTTP endpoints.
type FleetAnswerJSON struct {
	ClusterID int             `json:"cluster_id"`
	Data      json.RawMessage `json:"data,omitempty"`
	Code      wire.FleetCode  `json:"code,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// FleetStats is GET /fleet/stats: every cluster's answer to
// shardvisor.stats, and the totals of those that answered.
type FleetStats struct {
	Guilds      int               `json:"guilds"`
	Shards      int               `json:"shards"`
	ShardsReady int               `json:"shards_ready"`
	Answered    int               `json:"clusters_answered"`
	Clusters    []FleetAnswerJSON `json:"clusters"`
}

// FleetGuild is GET /fleet/guilds/{id}: where a guild belongs, as the plan
// and the status say, and what the cluster that has it says of it.
type FleetGuild struct {
	GuildID    string `json:"guild_id"`
	Shard      int    `json:"shard"`
	ClusterID  int    `json:"cluster_id"` // -1: another supervisor runs the shard
	ShardReady bool   `json:"shard_ready"`
	// Answer is the cluster's answer to shardvisor.guild (cached, name,
	// member count), or why there is none.
	Answer FleetAnswerJSON `json:"answer"`
}

// fleetRoutes adds the read-only fleet endpoints to mux.
func (s *Supervisor) fleetRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+forwardPath, s.serveForward)
	mux.HandleFunc("GET /fleet/stats", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), fleetHTTPTimeout)
		defer cancel()
		answers, err := s.FleetCall(ctx, statsRequest, wire.ToAll, 0, 0, nil)
		if err != nil {
			http.Error(w, err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		out := FleetStats{Clusters: []FleetAnswerJSON{}}
		for _, a := range answers {
			out.Clusters = append(out.Clusters, answerJSON(a))
			var st struct {
				Guilds      int `json:"guilds"`
				Shards      int `json:"shards"`
				ShardsReady int `json:"shards_ready"`
			}
			if a.Code == wire.FleetOK && json.Unmarshal(a.Data, &st) == nil {
				out.Guilds += st.Guilds
				out.Shards += st.Shards
				out.ShardsReady += st.ShardsReady
				out.Answered++
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /fleet/guilds/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		g, err := strconv.ParseUint(id, 10, 64)
		if err != nil || g == 0 {
			http.Error(w, fmt.Sprintf("guild id %q is not a snowflake\n", id), http.StatusBadRequest)
			return
		}
		rt := s.fleet.routes.Load()
		shard := int((g >> 22) % uint64(rt.plan.ShardCount))
		out := FleetGuild{GuildID: id, Shard: shard, ClusterID: -1}
		if cid, ok := rt.owner[shard]; ok {
			out.ClusterID = cid
			if c, ok := s.store.Cluster(cid); ok && c.PID != 0 {
				for _, st := range c.ShardState {
					out.ShardReady = out.ShardReady || (st.ID == shard && st.State == wire.ShardReady)
				}
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), fleetHTTPTimeout)
		defer cancel()
		q, _ := json.Marshal(map[string]string{"guild_id": id})
		answers, err := s.FleetCall(ctx, guildRequest, wire.ToGuild, 0, g, q)
		switch {
		case err != nil:
			out.Answer = FleetAnswerJSON{ClusterID: out.ClusterID, Code: wire.FleetDeadline, Error: err.Error()}
		case len(answers) == 1:
			out.Answer = answerJSON(answers[0])
			if out.ClusterID < 0 && answers[0].Cluster >= 0 {
				out.ClusterID = answers[0].Cluster // a peer's cluster answered
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func answerJSON(a *wire.FleetAnswer) FleetAnswerJSON {
	return FleetAnswerJSON{ClusterID: a.Cluster, Data: a.Data, Code: a.Code, Error: a.Error}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
