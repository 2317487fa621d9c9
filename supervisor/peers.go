package supervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Peers are the other supervisors of one bot split across machines
// (-cluster-ids, -cluster-share): a fleet call for a cluster this
// supervisor does not run is forwarded to them over HTTP (POST
// /fleet/forward on their metrics port), with the shared secret.
type Peers struct {
	// Addrs are host:port of the peers' metrics ports. A host that
	// resolves to several addresses (a StatefulSet's headless service)
	// is one peer per address; this supervisor among them does no harm.
	Addrs  []string
	Secret secret.Token
	Client *http.Client // nil: one that keeps connections to each peer (the call's deadline bounds it)
}

// forwardPath is where a supervisor takes calls forwarded by its peers.
const forwardPath = "/fleet/forward"

// forwardRequest is a forwarded call: for those of Clusters the peer runs,
// or for the cluster of Guild if the peer runs it.
type forwardRequest struct {
	Name     string          `json:"name"`
	Clusters []int           `json:"clusters,omitempty"`
	Guild    uint64          `json:"guild,omitempty"`
	Timeout  time.Duration   `json:"timeout_ns"`
	Data     json.RawMessage `json:"data,omitempty"`
}

// forwardResponse has the answers of the clusters the peer runs.
type forwardResponse struct {
	Answers []*wire.FleetAnswer `json:"answers"`
}

// resolve lists the peers' addresses, each host looked up now (a headless
// service's pods come and go).
func (p *Peers) resolve(ctx context.Context) []string {
	var out []string
	for _, a := range p.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			out = append(out, a) // let the request say what is wrong
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// forward asks the peers for the parts of c that this supervisor cannot
// answer (guild: the guild's cluster, which it does not run) and delivers
// their answers; a part no peer answers is unavailable, with the reason.
func (r *fleetRouter) forward(c *fleetCall, parts []*fleetPart, m *wire.FleetCall, guild uint64) {
	p := r.sup.cfg.Peers
	left := m.Timeout - time.Since(c.start)
	ctx, cancel := context.WithTimeout(context.Background(), left)
	defer cancel()
	req := forwardRequest{Name: m.Name, Guild: guild, Timeout: left, Data: m.Data}
	if guild == 0 {
		for _, pt := range parts {
			req.Clusters = append(req.Clusters, pt.cluster)
		}
	}
	body, _ := json.Marshal(req)
	client := p.Client
	if client == nil {
		client = r.client
	}
	var (
		mu      sync.Mutex
		answers = map[int]*wire.FleetAnswer{}
		guildA  *wire.FleetAnswer
		errs    []string
		wg      sync.WaitGroup
	)
	addrs := p.resolve(ctx)
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := postForward(ctx, client, addr, p.Secret, body)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			for _, a := range resp.Answers {
				if guild != 0 && guildA == nil {
					guildA = a
				}
				answers[a.Cluster] = a
			}
		}()
	}
	wg.Wait()
	why := "no peer supervisor runs it"
	if len(addrs) == 0 {
		why = "no peer supervisor is configured (-fleet-peers)"
	}
	if len(errs) > 0 {
		why += " (" + strings.Join(errs, "; ") + ")"
	}
	for _, pt := range parts {
		a := answers[pt.cluster]
		if guild != 0 {
			a = guildA
		}
		if a == nil {
			who := fmt.Sprintf("cluster %d", pt.cluster)
			if guild != 0 {
				who = fmt.Sprintf("the cluster of guild %d", guild)
			}
			pt.deliver(wire.FleetUnavailable, truncateText(who+": "+why))
			continue
		}
		pt.deliverAs(a.Cluster, a.Code, a.Error, a.Data)
	}
}

func postForward(ctx context.Context, client *http.Client, addr string, tok secret.Token, body []byte) (*forwardResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+forwardPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.Reveal())
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, errWithoutURL(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64*(wire.MaxFleetAnswerData+8<<10)))
	if err != nil {
		return nil, fmt.Errorf("peer %s: read answer: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("peer %s: %s: %s", addr, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	var out forwardResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("peer %s: decode answer: %w", addr, err)
	}
	for _, a := range out.Answers {
		if a == nil || a.Cluster < 0 || a.Validate() != nil {
			return nil, fmt.Errorf("peer %s: an answer that does not validate", addr)
		}
	}
	return &out, nil
}

// errWithoutURL drops the *url.Error wrapper (its text repeats the URL).
func errWithoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncateText(s string) string {
	if len(s) > wire.MaxFleetError {
		s = s[:wire.MaxFleetError]
	}
	return strings.ToValidUTF8(s, "?")
}

// serveForward answers calls forwarded by peers, for the clusters this
// supervisor runs; it never forwards them again. Without a secret
// (-fleet-secret) it refuses every call: the metrics port may be reachable
// by anyone, the fleet's requests must not be.
func (s *Supervisor) serveForward(w http.ResponseWriter, r *http.Request) {
	if s.cfg.FleetSecret.Empty() {
		http.Error(w, "fleet forwarding is off: this supervisor has no fleet secret\n", http.StatusForbidden)
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	want := sha256.Sum256([]byte(s.cfg.FleetSecret.Reveal()))
	have := sha256.Sum256([]byte(got))
	if !ok || subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		http.Error(w, "wrong or missing fleet secret\n", http.StatusUnauthorized)
		return
	}
	var req forwardRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, wire.MaxFleetRequestData+8<<10)).Decode(&req); err != nil {
		http.Error(w, "decode forwarded call: "+err.Error()+"\n", http.StatusBadRequest)
		return
	}
	if len(req.Clusters) > fleetSlots {
		http.Error(w, "too many clusters in one forwarded call\n", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(max(req.Timeout, 0), wire.MaxFleetTimeout))
	defer cancel()
	var calls []*wire.FleetCall
	rt := s.fleet.routes.Load()
	if req.Guild != 0 {
		shard := int((req.Guild >> 22) % uint64(rt.plan.ShardCount))
		if _, ok := rt.owner[shard]; ok {
			calls = append(calls, &wire.FleetCall{To: wire.ToGuild, Guild: req.Guild})
		}
	}
	for _, id := range req.Clusters {
		if rt.runners[id] != nil {
			calls = append(calls, &wire.FleetCall{To: wire.ToCluster, Cluster: id})
		}
	}
	out := forwardResponse{Answers: []*wire.FleetAnswer{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range calls {
		c.Name, c.Data = req.Name, req.Data
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers, err := s.fleetCall(ctx, c, false)
			mu.Lock()
			defer mu.Unlock()
			for _, a := range answers {
				if a.Cluster >= 0 {
					out.Answers = append(out.Answers, a)
				}
			}
			if err != nil && c.To == wire.ToCluster {
				out.Answers = append(out.Answers, &wire.FleetAnswer{Cluster: c.Cluster, Of: 1, Code: wire.FleetDeadline, Error: truncateText(err.Error())})
			}
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}
