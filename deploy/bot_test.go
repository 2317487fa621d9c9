package deploy

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// member is one process of a deployment (a compose service, a pod's
// container): shardvisor's arguments after the binary, and its
// environment as the deployment file gives it.
type member struct {
	name string
	args []string
	env  map[string]string
	// inherited are the variables of env that come from the image's ENV,
	// not from the deployment file: a mode without such a flag ignores them.
	inherited map[string]bool
}

func (m member) mode() string {
	if len(m.args) > 0 && !strings.HasPrefix(m.args[0], "-") {
		return m.args[0]
	}
	return "run"
}

// flag returns the value of -name in m's arguments (or of its variable).
func (m member) flag(name string) string {
	for i, a := range m.args {
		if a == "-"+name && i+1 < len(m.args) {
			return m.args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v
		}
	}
	return m.env[harness.EnvPrefix+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))]
}

// setFlag returns m with -name set to value: in the arguments if it is
// there, else in the environment.
func (m member) setFlag(name, value string) member {
	out := member{name: m.name, args: slices.Clone(m.args), env: map[string]string{}, inherited: m.inherited}
	for k, v := range m.env {
		out.env[k] = v
	}
	for i, a := range out.args {
		if a == "-"+name && i+1 < len(out.args) {
			out.args[i+1] = value
			return out
		}
		if strings.HasPrefix(a, "-"+name+"=") {
			out.args[i] = "-" + name + "=" + value
			return out
		}
	}
	out.env[harness.EnvPrefix+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = value
	return out
}

// checkMemberFlags checks that every flag and SHARDVISOR_ variable of
// each member is a flag of its mode, and that the real binary accepts
// their values (it stops at the missing token).
func checkMemberFlags(t *testing.T, bin string, members []member) {
	t.Helper()
	known := map[string]map[string]bool{}
	for _, m := range members {
		if known[m.mode()] == nil {
			known[m.mode()] = harness.Flags(t, bin, m.mode())
		}
		own := map[string]string{}
		for k, v := range m.env {
			if !m.inherited[k] {
				own[k] = v
			}
		}
		if err := harness.CheckFlags(known[m.mode()], m.args, own); err != nil {
			t.Errorf("%s: %v", m.name, err)
			continue
		}
		env := map[string]string{}
		for k, v := range m.env {
			if k != harness.EnvPrefix+"TOKEN_FILE" { // the check runs without a token
				env[k] = v
			}
		}
		if err := harness.ParseCheck(bin, m.args, env); err != nil {
			t.Errorf("%s: %v", m.name, err)
		}
	}
}

// plan is the plan every member of a split bot must agree on.
type plan struct{ shards, perCluster, clusters int }

func planOf(t *testing.T, m member) plan {
	t.Helper()
	shards, err1 := strconv.Atoi(m.flag("shards"))
	per, err2 := strconv.Atoi(m.flag("shards-per-cluster"))
	if err1 != nil || err2 != nil || shards < 1 || per < 1 {
		t.Fatalf("%s: shards %q per cluster %q: a bot split across processes needs a fixed shard count and cluster size",
			m.name, m.flag("shards"), m.flag("shards-per-cluster"))
	}
	return plan{shards, per, (shards + per - 1) / per}
}

// liveBot runs a deployment's members as processes on this machine
// against one fake Discord: the identify queue (if any) first, then the
// supervisors. Only what cannot be the same here is changed: the API URL,
// the token file, loopback addresses for listeners, and the queue's URL
// (its service name becomes its loopback address); the identify interval
// is shortened for the test. Returns once every supervisor is ready.
type liveBot struct {
	fake    *harness.Fake
	addrs   map[string]string // member name → its -metrics-addr
	procs   map[string]*harness.Proc
	members []member
}

// The fake's and the test's identify pacing (see TestUnderSystemd for the
// margin).
const (
	liveBuckets      = 2
	liveFakeInterval = 100 * time.Millisecond
	liveOurInterval  = 300 * time.Millisecond
	liveToken        = "MTA5OTk5.LiVeToKeN.deploy"
)

func startLiveBot(t *testing.T, bins harness.Binaries, shards int, queue *member, supervisors []member) *liveBot {
	t.Helper()
	fake := harness.StartFake(t, harness.Net{}.Client(), nil, bins.FakeDiscord, "-token", liveToken,
		"-shards", strconv.Itoa(shards), "-max-concurrency", strconv.Itoa(liveBuckets),
		"-guilds", strconv.Itoa(10*shards), "-identify-interval", liveFakeInterval.String())
	dir := harness.TempDir(t, 0o700)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(liveToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fleetSecretFile := filepath.Join(dir, "fleet-secret")
	if err := os.WriteFile(fleetSecretFile, []byte("live-fleet-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &liveBot{fake: fake, addrs: map[string]string{}, procs: map[string]*harness.Proc{}}
	var peers []string
	for _, m := range supervisors {
		b.addrs[m.name] = harness.FreeAddr(t)
		peers = append(peers, b.addrs[m.name])
	}
	common := func(m member) member {
		m = m.setFlag("api-url", fake.URL)
		m = m.setFlag("token-file", tokenFile)
		if m.flag("fleet-peers") != "" { // the services' names, on loopback here
			m = m.setFlag("fleet-peers", strings.Join(peers, ","))
		}
		if m.flag("fleet-secret-file") != "" {
			m = m.setFlag("fleet-secret-file", fleetSecretFile)
		}
		if m.flag("session-dir") != "" { // the volume's mount point, one per member here
			m = m.setFlag("session-dir", filepath.Join(dir, m.name+"-sessions"))
		}
		return m.setFlag("identify-interval", liveOurInterval.String())
	}
	queueURL := ""
	if queue != nil {
		q := common(*queue)
		addr := harness.FreeAddr(t)
		q = q.setFlag("listen", addr)
		b.start(t, bins.Shardvisor, q)
		queueURL = "http://" + addr
		harness.Poll(t, "the identify queue to serve", 20*time.Millisecond, func() (bool, error) {
			ctx, cancel := harness.Deadline()
			defer cancel()
			code, _, err := harness.Get(ctx, harness.Net{}.Client(), queueURL+"/healthz")
			return code == 200, err
		})
	}
	for _, m := range supervisors {
		m = common(m)
		if queueURL != "" || m.flag("identify-queue-url") != "" {
			m = m.setFlag("identify-queue-url", queueURL)
		}
		if m.flag("rest-limits-url") != "" { // the queue holds the REST limits too
			m = m.setFlag("rest-limits-url", queueURL)
		}
		m = m.setFlag("metrics-addr", b.addrs[m.name])
		b.start(t, bins.Shardvisor, m)
		b.members = append(b.members, m)
	}
	for _, m := range b.members {
		harness.WaitStatus(t, harness.Net{}.Client(), b.addrs[m.name], m.name+" ready", func(s supervisor.Snapshot) bool { return s.Ready })
	}
	return b
}

func (b *liveBot) start(t *testing.T, bin string, m member) {
	t.Helper()
	// Nothing may leave this machine: every URL must be a loopback one
	// (a service name left over would even be looked up in DNS).
	for _, v := range append(slices.Clone(m.args), slices.Collect(maps.Values(m.env))...) {
		if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Host != "" && u.Hostname() != "127.0.0.1" {
			t.Fatalf("%s would reach %s: the live test runs on loopback only", m.name, v)
		}
	}
	env := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range m.env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	b.procs[m.name] = harness.Start(t, env, nil, append([]string{bin}, m.args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s %s:\n%s", m.name, strings.Join(m.args, " "), b.procs[m.name].Output())
		}
	})
}

// check verifies the running bot: the supervisors together run every
// shard of the plan exactly once, each shard has one live session, and no
// two IDENTIFYs of a bucket came too close, across all of them.
func (b *liveBot) check(t *testing.T, p plan) {
	t.Helper()
	owner := map[int]string{}
	for _, m := range b.members {
		s, err := harness.Status(harness.Net{}.Client(), b.addrs[m.name])
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if s.ShardCount != p.shards || s.PlanClusters != p.clusters {
			t.Errorf("%s runs a plan of %d shards in %d clusters; want %d in %d", m.name, s.ShardCount, s.PlanClusters, p.shards, p.clusters)
		}
		for _, c := range s.Clusters {
			for _, sh := range c.Shards {
				if o, dup := owner[sh]; dup {
					t.Errorf("shard %d runs in both %s and %s", sh, o, m.name)
				}
				owner[sh] = m.name
			}
		}
	}
	for sh := range p.shards {
		if owner[sh] == "" {
			t.Errorf("no member runs shard %d", sh)
		}
	}
	r, err := b.fake.Record()
	if err != nil {
		t.Fatal(err)
	}
	for sh := range p.shards {
		if l := r.Shard(sh, p.shards); l.Live != 1 {
			t.Errorf("shard %d has %d live sessions, want 1", sh, l.Live)
		}
	}
	if err := harness.CheckPacing(r); err != nil {
		t.Errorf("pacing across every member: %v", err)
	}
	t.Logf("%d members run %d shards; %d IDENTIFYs, none too soon for its bucket", len(b.members), len(owner), len(r.Identifies))
	// Fleet calls reach every cluster of the plan from every member: its
	// own, and its peers' through the supervisors' forwarding.
	for _, m := range b.members {
		var fs supervisor.FleetStats
		ctx, cancel := harness.Deadline()
		err := harness.GetJSON(ctx, harness.Net{}.Client(), "http://"+b.addrs[m.name]+"/fleet/stats", &fs)
		cancel()
		if err != nil || fs.Answered != p.clusters || fs.Guilds != 10*p.shards {
			var missing []string
			for _, c := range fs.Clusters {
				if c.Code != "" {
					missing = append(missing, fmt.Sprintf("cluster %d: %s: %s", c.ClusterID, c.Code, c.Error))
				}
			}
			t.Errorf("%s: /fleet/stats: %d of %d clusters answered, %d guilds of %d (%v); %s", m.name, fs.Answered, p.clusters, fs.Guilds, 10*p.shards, err, strings.Join(missing, "; "))
		}
	}
}

// stop sends SIGTERM to every process and checks each exits 0.
func (b *liveBot) stop(t *testing.T) {
	t.Helper()
	for _, p := range b.procs {
		p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	for name, p := range b.procs {
		code, err := p.Wait(harness.Patience)
		if err != nil || code != 0 {
			t.Errorf("%s after SIGTERM: exit %d, %v", name, code, err)
		}
	}
}

// checkQueueURL checks that a member's -identify-queue-url names the queue's
// service and the port it listens on.
func checkQueueURL(t *testing.T, m member, service, listen string) {
	t.Helper()
	u, err := url.Parse(m.flag("identify-queue-url"))
	_, port, _ := strings.Cut(listen, ":")
	if err != nil || u.Hostname() != service || u.Port() != port {
		t.Errorf("%s: -identify-queue-url %q; want http://%s:%s (the queue's service and listen port)", m.name, m.flag("identify-queue-url"), service, port)
	}
}
