package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/shardvisor/shardvisor/cluster"
	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/wire"
	"github.com/shardvisor/shardvisor/supervisor"
)

// addFleetTestBot adds what the fleet tests call: requests "who" (the
// answering cluster's id), "boom" (panics), "big" (an answer past the
// limit), and the command /fleet, which makes the fleet call its options
// name (name, to: all, cluster or guild, cluster, guild) from the cluster
// that gets the interaction and replies with the answers as JSON.
func addFleetTestBot(bot *cluster.Bot) {
	bot.Serve("who", func(_ context.Context, l *cluster.Local, _ json.RawMessage) (any, error) { return l.ClusterID, nil })
	bot.Serve("boom", func(context.Context, *cluster.Local, json.RawMessage) (any, error) { panic("boom in a handler") })
	bot.Serve("big", func(context.Context, *cluster.Local, json.RawMessage) (any, error) {
		return strings.Repeat("x", wire.MaxFleetAnswerData), nil
	})
	bot.Command(&discordgo.ApplicationCommand{Name: "fleet", Description: "test: make a fleet call"}, func(i *cluster.Interaction) error {
		opt := map[string]*discordgo.ApplicationCommandInteractionDataOption{}
		for _, o := range i.ApplicationCommandData().Options {
			opt[o.Name] = o
		}
		ctx, cancel := context.WithTimeout(i.Context, 2*time.Second)
		defer cancel()
		f, name := i.Fleet(), opt["name"].StringValue()
		var answers []cluster.Answer
		var err error
		switch opt["to"].StringValue() {
		case "all":
			answers, err = f.Broadcast(ctx, name, nil)
		case "cluster":
			var a cluster.Answer
			a, err = f.Ask(ctx, int(opt["cluster"].IntValue()), name, nil)
			answers, err = []cluster.Answer{a}, nil
		case "guild":
			g := opt["guild"].StringValue()
			var a cluster.Answer
			a, err = f.ForGuild(ctx, g, name, cluster.GuildQuery{GuildID: g})
			answers, err = []cluster.Answer{a}, nil
		}
		out := fleetResult{From: i.Local().ClusterID}
		if err != nil {
			out.Err = err.Error()
		}
		for _, a := range answers {
			r := fleetResultAnswer{Cluster: a.ClusterID, Data: a.Data}
			if a.Err != nil {
				r.Err = a.Err.Error()
			}
			out.Answers = append(out.Answers, r)
		}
		b, _ := json.Marshal(out)
		return i.Reply(string(b))
	})
}

type fleetResult struct {
	From    int                 `json:"from"`
	Err     string              `json:"err,omitempty"`
	Answers []fleetResultAnswer `json:"answers"`
}

type fleetResultAnswer struct {
	Cluster int             `json:"cluster"`
	Data    json.RawMessage `json:"data,omitempty"`
	Err     string          `json:"err,omitempty"`
}

// fleetFrom runs /fleet in guild (so on its cluster) with the options.
func fleetFrom(t *testing.T, fake *discordtest.Server, guild string, opts ...discordtest.Option) fleetResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: guild, Command: "fleet", Options: opts})
	if err != nil {
		t.Fatalf("/fleet %v: %v", opts, err)
	}
	var r fleetResult
	if err := json.Unmarshal([]byte(rep.Content), &r); err != nil {
		t.Fatalf("/fleet %v: reply %q: %v", opts, rep.Content, err)
	}
	return r
}

func opt(name string, v any) discordtest.Option { return discordtest.Option{Name: name, Value: v} }

// TestFleetCallsEndToEnd: real supervisor and cluster processes against
// the fake Discord. A broadcast from cluster 0 sums every guild; ForGuild
// reaches the cluster of each guild of a sample; a panicking handler and
// an oversized answer come back as errors and the cluster carries on; the
// bot's /stats and /shard, the HTTP endpoints and `shardvisor guild`
// answer; a cluster killed with -9 is unavailable in a broadcast within
// its deadline while the others answer.
func TestFleetCallsEndToEnd(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 120, Shards: 8, MaxConcurrency: 2})
	addr := freeAddr(t)
	p := shardvisor(t, []string{"DISCORD_TOKEN=" + secretToken},
		append([]string{"run", "-shards", "8", "-clusters", "4"}, fastFlags(fake, addr)...)...)
	snap := p.until(t, "ready", ready)
	// -clusters 4 of 8 shards: shard s is cluster s/2's.
	onCluster := func(c int) string { return fake.GuildIDsOf(2*c, 8)[0] }

	all := fleetFrom(t, fake, onCluster(0), opt("name", cluster.StatsRequest), opt("to", "all"))
	if all.From != 0 || all.Err != "" || len(all.Answers) != 4 {
		t.Fatalf("broadcast from cluster 0: %+v", all)
	}
	sum := 0
	for i, a := range all.Answers {
		var st cluster.Stats
		if err := json.Unmarshal(a.Data, &st); err != nil || a.Cluster != i || st.ClusterID != i {
			t.Errorf("answer %d: %+v (%v)", i, a, err)
		}
		sum += st.Guilds
	}
	if sum != 120 {
		t.Errorf("the broadcast sums %d guilds, want the fake's 120", sum)
	}

	for shard := range 8 {
		for _, g := range fake.GuildIDsOf(shard, 8)[:3] {
			r := fleetFrom(t, fake, onCluster(0), opt("name", "who"), opt("to", "guild"), opt("guild", g))
			if len(r.Answers) != 1 || r.Answers[0].Cluster != shard/2 || string(r.Answers[0].Data) != fmt.Sprint(shard/2) {
				t.Errorf("ForGuild(%s) of shard %d: %+v, want cluster %d", g, shard, r, shard/2)
			}
		}
	}
	g := fake.GuildIDsOf(5, 8)[0]
	r := fleetFrom(t, fake, onCluster(1), opt("name", cluster.GuildRequest), opt("to", "guild"), opt("guild", g))
	var info cluster.GuildInfo
	if len(r.Answers) != 1 || json.Unmarshal(r.Answers[0].Data, &info) != nil || !info.Cached || info.Shard != 5 || info.ClusterID != 2 || info.Name == "" {
		t.Errorf("guild lookup of %s: %+v", g, r)
	}

	boom := fleetFrom(t, fake, onCluster(0), opt("name", "boom"), opt("to", "cluster"), opt("cluster", 2))
	if len(boom.Answers) != 1 || !strings.Contains(boom.Answers[0].Err, "panic: boom in a handler") {
		t.Errorf("panicking handler: %+v, want the panic as an error", boom)
	}
	big := fleetFrom(t, fake, onCluster(3), opt("name", "big"), opt("to", "cluster"), opt("cluster", 1))
	if len(big.Answers) != 1 || !strings.Contains(big.Answers[0].Err, "too_large: answer of 1048578 bytes exceeds the limit of 1048576") {
		t.Errorf("oversized answer: %+v, want a clear error", big)
	}
	nope := fleetFrom(t, fake, onCluster(3), opt("name", "nope"), opt("to", "cluster"), opt("cluster", 0))
	if len(nope.Answers) != 1 || !strings.Contains(nope.Answers[0].Err, `no_such_request: cluster 0 serves no request "nope"`) {
		t.Errorf("unknown name: %+v", nope)
	}
	after := fleetFrom(t, fake, onCluster(0), opt("name", "who"), opt("to", "cluster"), opt("cluster", 2))
	if len(after.Answers) != 1 || string(after.Answers[0].Data) != "2" {
		t.Errorf("cluster 2 after its handler panicked: %+v", after)
	}

	// The bot's own commands.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: onCluster(2), Command: "stats"}); err != nil ||
		!strings.HasPrefix(rep.Content, "120 guilds · 8/8 shards ready · 4/4 clusters answered") {
		t.Errorf("/stats: %q, %v", rep.Content, err)
	} else {
		t.Logf("/stats:\n%s", rep.Content)
	}
	if rep, err := fake.Interact(ctx, discordtest.Interaction{GuildID: g, Command: "shard"}); err != nil || rep.Content != "This server is on shard 5, cluster 2." {
		t.Errorf("/shard: %q, %v", rep.Content, err)
	}

	// The operator's view.
	var fs supervisor.FleetStats
	if code, body, err := p.get("/fleet/stats"); err != nil || code != 200 || json.Unmarshal([]byte(body), &fs) != nil || fs.Guilds != 120 || fs.Answered != 4 {
		t.Errorf("/fleet/stats: %d %v %s", code, err, body)
	}
	out, code := command(t, nil, "guild", g, "-addr", addr)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("guild %s: shard 5 (ready), cluster 2", g)) || !strings.Contains(out, "cached: \"guild-") {
		t.Errorf("shardvisor guild: exit %d\n%s", code, out)
	}
	t.Logf("shardvisor guild %s:\n%s", g, out)
	if code, _, _ := p.get("/fleet/guilds/abc"); code != 400 {
		t.Errorf("/fleet/guilds/abc: %d, want 400", code)
	}

	// kill -9 of cluster 3: a broadcast right after has its part
	// unavailable, within the call's deadline, and the others' answers.
	syscall.Kill(snap.Clusters[3].PID, syscall.SIGKILL)
	start := time.Now()
	down := fleetFrom(t, fake, onCluster(0), opt("name", "who"), opt("to", "all"))
	took := time.Since(start)
	if len(down.Answers) != 4 {
		t.Fatalf("broadcast with cluster 3 killed: %+v", down)
	}
	for i, a := range down.Answers[:3] {
		if string(a.Data) != fmt.Sprint(i) {
			t.Errorf("cluster %d with cluster 3 killed: %+v", i, a)
		}
	}
	if a := down.Answers[3]; !strings.Contains(a.Err, "unavailable") {
		t.Errorf("killed cluster 3: %+v, want unavailable", a)
	}
	t.Logf("broadcast with cluster 3 killed -9 answered in %v: %s", took.Round(time.Millisecond), down.Answers[3].Err)

	// The supervisor sees the death before it is stopped: a process that
	// dies of SIGKILL during a stop is an unclean stop (exit 1).
	p.until(t, "cluster 3 restarted and ready", func(s supervisor.Snapshot) bool {
		return s.Ready && s.Clusters[3].Restarts == 1
	})
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	noLeak(t, "the logs", p.out.String())
}

// TestFleetAcrossSupervisors: two supervisors split one plan
// (-cluster-share) and forward each other's fleet calls with the shared
// secret: a broadcast from either reaches all four clusters, ForGuild
// reaches a guild's cluster on the other machine; a forwarded call without
// the secret, or with a wrong one, is refused.
func TestFleetAcrossSupervisors(t *testing.T) {
	fake := newFake(t, discordtest.Options{Guilds: 64, Shards: 8, MaxConcurrency: 2})
	queueAddr, addrA, addrB := freeAddr(t), freeAddr(t), freeAddr(t)
	const fleetSecret = "FlEeTsEcReT-42"
	env := []string{"DISCORD_TOKEN=" + secretToken, "SHARDVISOR_FLEET_SECRET=" + fleetSecret}
	plan := []string{"run", "-shards", "8", "-clusters", "4"}
	b := shardvisor(t, env, append(append(plan, "-cluster-share", "1/2", "-identify-queue-url", "http://"+queueAddr,
		"-fleet-peers", addrA), fastFlags(fake, addrB)...)...)
	a := shardvisor(t, env, append(append(plan, "-cluster-share", "0/2", "-identify-queue-listen", queueAddr,
		"-fleet-peers", "localhost:"+strings.Split(addrB, ":")[1]), fastFlags(fake, addrA)...)...)
	for _, p := range []*proc{a, b} {
		for _, c := range p.until(t, "ready", ready).Clusters {
			if strings.Contains(procFile(c.PID, "environ"), "FlEeTsEcReT") {
				t.Errorf("cluster %d inherited the fleet secret", c.ID)
			}
		}
	}
	// Shard s is cluster s/2's; clusters 0 and 1 run under a, 2 and 3 under b.
	onCluster := func(c int) string { return fake.GuildIDsOf(2*c, 8)[0] }
	for _, from := range []int{0, 3} {
		r := fleetFrom(t, fake, onCluster(from), opt("name", "who"), opt("to", "all"))
		if r.From != from || len(r.Answers) != 4 {
			t.Fatalf("broadcast from cluster %d: %+v", from, r)
		}
		for i, an := range r.Answers {
			if an.Cluster != i || string(an.Data) != fmt.Sprint(i) {
				t.Errorf("broadcast from cluster %d: answer %d %+v", from, i, an)
			}
		}
	}
	for shard := range 8 {
		g := fake.GuildIDsOf(shard, 8)[1]
		r := fleetFrom(t, fake, onCluster(0), opt("name", "who"), opt("to", "guild"), opt("guild", g))
		if len(r.Answers) != 1 || r.Answers[0].Cluster != shard/2 || string(r.Answers[0].Data) != fmt.Sprint(shard/2) {
			t.Errorf("ForGuild of shard %d from cluster 0: %+v", shard, r)
		}
	}
	stats := fleetFrom(t, fake, onCluster(2), opt("name", cluster.StatsRequest), opt("to", "all"))
	sum := 0
	for _, an := range stats.Answers {
		var st cluster.Stats
		json.Unmarshal(an.Data, &st)
		sum += st.Guilds
	}
	if sum != 64 {
		t.Errorf("guilds of both supervisors' clusters: %d, want 64 (%+v)", sum, stats)
	}

	// The forward endpoint without the secret, or with another one.
	body := `{"name":"who","clusters":[2],"timeout_ns":1000000000}`
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + fleetSecret + "x", fleetSecret} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addrB+"/fleet/forward", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(msg), "2") {
			t.Errorf("forward with Authorization %q: %d %q, want 401 and no answer", auth, resp.StatusCode, msg)
		}
	}
	for _, p := range []*proc{a, b} {
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("exit %d", code)
		}
		if strings.Contains(p.out.String(), "FlEeTsEcReT") {
			t.Error("the fleet secret appears in the logs")
		}
	}
}
