package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/harness"
	"github.com/shardvisor/shardvisor/supervisor"
)

// The bot of the container test: many clusters in one container.
const (
	ctrShards     = 16
	ctrPerCluster = 2
	ctrClusters   = ctrShards / ctrPerCluster
	ctrBuckets    = 4
	// The fake refuses IDENTIFYs closer than this per bucket; the
	// supervisor paces slower by a margin for the fake's measurement on a
	// busy machine (see systemd's TestUnderSystemd).
	ctrFakeInterval = 100 * time.Millisecond
	ctrOurInterval  = 300 * time.Millisecond
	ctrToken        = "MTA5OTk5.CtTeStToKeN.image"
	// dockerStopGrace is how long `docker stop` waits for PID 1 before
	// SIGKILL, by default.
	dockerStopGrace = 10 * time.Second
)

// distrolessEnv is the environment gcr.io/distroless/static sets for
// every container (its image config).
func distrolessEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
}

// runContainer runs the image's binary as a container runtime runs the
// image: as PID 1 of its own PID and mount namespaces, chrooted into a
// root file system holding what the image holds (the binary where the
// Dockerfile copies it, nonroot in /etc/passwd, /tmp, /dev/null), as the
// Dockerfile's USER, with its ENTRYPOINT, CMD and ENV unchanged, in a
// network namespace of its own (where the fake Discord runs too). The
// test adds only the fake's URL, a token file (as a secret is mounted),
// and a quick plan. Then: many clusters come up, the HEALTHCHECK command
// passes, orphans re-parented to PID 1 are reaped, SIGHUP rolls the
// clusters, and SIGTERM stops everything cleanly within docker stop's
// grace period, exit 0.
func runContainer(t *testing.T, img image, bin string) {
	if err := harness.CanRunContainer(); err != nil {
		harness.Missing(t, err.Error())
	}
	final := img.final()
	uid, gid := img.user(t)
	dest, _ := img.binary(t)
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	const tokenPath = "/run/secrets/discord-token"
	rootfs := harness.Rootfs(t, []harness.File{
		{Path: dest, Data: binary, Mode: 0o755},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), Mode: 0o644},
		{Path: "/etc/group", Data: []byte("root:x:0:\nnonroot:x:65532:\n"), Mode: 0o644},
		{Path: tokenPath, Data: []byte(ctrToken + "\n"), Mode: 0o400, UID: uid, GID: gid},
	})
	// Nothing in the root file system is writable by the image's user (not
	// even /tmp): it runs as under Kubernetes' readOnlyRootFilesystem.
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}

	net := harness.NewNetns(t)
	client := net.Client()
	bins := harness.Build(t)
	fake := harness.StartFake(t, client, net.Prefix(), bins.FakeDiscord, "-token", ctrToken,
		"-shards", strconv.Itoa(ctrShards), "-max-concurrency", strconv.Itoa(ctrBuckets),
		"-guilds", "160", "-identify-interval", ctrFakeInterval.String())

	vars := distrolessEnv()
	for k, v := range env(final) {
		vars = append(vars, k+"="+v)
	}
	vars = append(vars, "SHARDVISOR_API_URL="+fake.URL, "SHARDVISOR_TOKEN_FILE="+tokenPath,
		"SHARDVISOR_SHARDS_PER_CLUSTER="+strconv.Itoa(ctrPerCluster), "SHARDVISOR_IDENTIFY_INTERVAL="+ctrOurInterval.String())
	argv := append(append([]string{}, only[*instructions.EntrypointCommand](t, final, "ENTRYPOINT").CmdLine...),
		only[*instructions.CmdCommand](t, final, "CMD").CmdLine...)

	began := time.Now()
	c := harness.StartContainer(t, harness.ContainerConfig{Rootfs: rootfs, Argv: argv, Env: vars, UID: uid, GID: gid, Net: net})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container output:\n%s", c.Output())
		}
	})
	// The image's own metrics address, inside the container's network.
	_, port, _ := strings.Cut(env(final)["SHARDVISOR_METRICS_ADDR"], ":")
	addr := "127.0.0.1:" + port
	snap := harness.WaitStatus(t, client, addr, "every cluster ready", func(s supervisor.Snapshot) bool {
		return s.Ready && s.ClustersReady == ctrClusters
	})
	t.Logf("%d shards in %d clusters ready %v after the container started", snap.ShardsReady, ctrClusters, time.Since(began).Round(time.Millisecond))

	t.Run("the supervisor is PID 1, as USER, the clusters its children", func(t *testing.T) {
		checkPID1(t, c.PID1(), uid, snap)
	})
	t.Run("HEALTHCHECK passes", func(t *testing.T) {
		h := only[*instructions.HealthCheckCommand](t, final, "HEALTHCHECK").Health
		if out, err := c.Exec(h.Test[1:]...); err != nil {
			t.Errorf("HEALTHCHECK %q in the container: %v\n%s", h.Test[1:], err, out)
		}
	})
	t.Run("orphans are reaped", func(t *testing.T) { checkReaping(t, c) })
	t.Run("SIGHUP rolls the clusters", func(t *testing.T) {
		if err := c.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		after := harness.WaitStatus(t, client, addr, "every cluster rolled and ready", func(s supervisor.Snapshot) bool {
			for _, cl := range s.Clusters {
				if cl.RestartsBy[supervisor.ReasonRolling] < 1 {
					return false
				}
			}
			return s.Ready
		})
		for i, cl := range after.Clusters {
			if cl.PID == snap.Clusters[i].PID {
				t.Errorf("cluster %d kept pid %d through SIGHUP", cl.ID, cl.PID)
			}
		}
	})
	t.Run("SIGTERM stops everything cleanly within the grace period", func(t *testing.T) {
		stopping := time.Now()
		if err := c.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, err := c.Wait(harness.Patience)
		took := time.Since(stopping)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("SIGTERM to PID 1: exit %d after %v", code, took.Round(time.Millisecond))
		if code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0", code)
		}
		if took > dockerStopGrace {
			t.Errorf("the stop took %v, past docker stop's %v grace period: the clusters would be killed", took, dockerStopGrace)
		}
		r := fake.WaitRecord(t, "every session closed", harness.AllClosed)
		for _, s := range r.Sessions {
			if s.End.After(stopping) && (s.CloseCode != 1000 || s.ClosedBy != discordtest.ClosedByClient) {
				t.Errorf("at the stop, shard %d's session ended with %d by %s; want 1000 by the client", s.Shard, s.CloseCode, s.ClosedBy)
			}
		}
		if err := harness.CheckPacing(r); err != nil {
			t.Error(err)
		}
		if strings.Contains(c.Output(), "CtTeStToKeN") {
			t.Error("the token appears in the container's logs")
		}
	})
}

// checkPID1 checks that the supervisor runs as PID 1 of its namespace,
// as the image's user, and that every cluster is its child.
func checkPID1(t *testing.T, pid1, uid int, snap supervisor.Snapshot) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid1))
	if err != nil {
		t.Fatal(err)
	}
	var nspid []string
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			nspid = strings.Fields(rest)
		}
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			if f := strings.Fields(rest); f[0] != strconv.Itoa(uid) {
				t.Errorf("the supervisor runs as uid %s, not the image's USER %d", f[0], uid)
			}
		}
	}
	if len(nspid) < 2 || nspid[len(nspid)-1] != "1" {
		t.Errorf("the supervisor is not PID 1 in its namespace: NSpid %v", nspid)
	}
	kids := 0
	for _, st := range harness.ChildStats(pid1) {
		if st.Comm == "shardvisor" {
			kids++
		}
	}
	if kids != len(snap.Clusters) {
		t.Errorf("PID 1 has %d shardvisor children, want its %d clusters", kids, len(snap.Clusters))
	}
	for _, c := range snap.Clusters {
		if c.PID < 2 {
			t.Errorf("cluster %d has pid %d in the container", c.ID, c.PID)
		}
	}
}

// checkReaping leaves orphans in the container (a shell started there
// exits before its children, as a cluster's helper might) and checks that
// PID 1 adopts them and, once they exit, reaps them: no zombie stays.
func checkReaping(t *testing.T, c *harness.Container) {
	t.Helper()
	// The host's sh and sleep, in the container's PID namespace only.
	ctx, cancel := harness.Deadline()
	defer cancel()
	if out, err := harness.Run(ctx, nil, "", "nsenter", "--target", strconv.Itoa(c.PID1()), "--pid", "--",
		"sh", "-c", "for i in 1 2 3; do sleep 1000 </dev/null >/dev/null 2>&1 & done; exit 0"); err != nil {
		t.Fatalf("start orphans in the container: %v\n%s", err, out)
	}
	var orphans []int
	harness.Poll(t, "three orphaned sleeps adopted by PID 1", 10*time.Millisecond, func() (bool, error) {
		orphans = orphans[:0]
		for _, st := range harness.ChildStats(c.PID1()) {
			if st.Comm == "sleep" {
				orphans = append(orphans, st.PID)
			}
		}
		return len(orphans) == 3, fmt.Errorf("%d adopted", len(orphans))
	})
	for _, pid := range orphans {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	harness.Poll(t, "PID 1 to reap its orphans", 10*time.Millisecond, func() (bool, error) {
		var left []string
		for _, st := range harness.ChildStats(c.PID1()) {
			if st.Comm == "sleep" || st.State == 'Z' {
				left = append(left, fmt.Sprintf("%d %s %c", st.PID, st.Comm, st.State))
			}
		}
		return len(left) == 0, fmt.Errorf("left: %v", left)
	})
}
