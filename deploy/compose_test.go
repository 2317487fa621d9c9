package deploy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shardvisor/shardvisor/internal/harness"
)

// loadCompose loads deploy/compose.yaml as docker compose does
// (compose-go: the Compose Specification's schema, interpolation, merge
// keys, profiles), with the given profiles active, from a copy beside a
// stand-in token file (the real one is never committed).
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"compose.yaml": b, "discord-token": []byte("stand-in\n"), "fleet-secret": []byte("stand-in\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")},
		cli.WithWorkingDirectory(dir), cli.WithProfiles(profiles), cli.WithEnv([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("compose.yaml (profiles %v): %v", profiles, err)
	}
	return p
}

// composeMember turns a service into the process it runs: the image's
// ENTRYPOINT with the service's command, the image's ENV overridden by
// the service's environment.
func composeMember(t *testing.T, img image, s types.ServiceConfig) member {
	t.Helper()
	m := member{name: s.Name, args: slices.Clone([]string(s.Command)), env: env(img.final()), inherited: map[string]bool{}}
	for k := range m.env {
		m.inherited[k] = true
	}
	for k, v := range s.Environment {
		if v != nil {
			m.env[k] = *v
			delete(m.inherited, k)
		}
	}
	return m
}

// TestCompose checks deploy/compose.yaml, both layouts: it loads as docker
// compose loads it; each bot service runs the published image; the token
// comes only from a secret file; docker stop's grace period is above the
// shutdown timeout; every flag and variable is a real flag of its mode,
// with values the binary accepts; the split layout's containers run every
// cluster of one fixed plan exactly once and all ask the shared identify
// queue. Then each layout runs for real, its services as processes against
// one fake Discord: every shard comes up once, no IDENTIFY too soon for
// its bucket across all containers, and each stops with exit 0.
func TestCompose(t *testing.T) {
	img := parseDockerfile(t)
	bins := harness.Build(t)
	single := loadCompose(t, "single")
	split := loadCompose(t, "split")
	if len(single.Services) != 1 {
		t.Errorf("profile single has %d services, want 1", len(single.Services))
	}

	var splitQueue *member
	var splitClusters []member
	for _, p := range []*types.Project{single, split} {
		for _, s := range p.Services {
			if !strings.HasPrefix(s.Image, "ghcr.io/shardvisor/shardvisor") {
				t.Errorf("%s: image %q, want the published ghcr.io/shardvisor/shardvisor", s.Name, s.Image)
			}
			m := composeMember(t, img, s)
			files := map[string]bool{}
			for _, sec := range s.Secrets {
				files["/run/secrets/"+sec.Source] = true
			}
			if !files[m.flag("token-file")] {
				t.Errorf("%s: secrets %v, SHARDVISOR_TOKEN_FILE %q: want the token from the secret's file", s.Name, s.Secrets, m.flag("token-file"))
			}
			for f := range files {
				if f != m.flag("token-file") && f != m.flag("fleet-secret-file") {
					t.Errorf("%s: secret %s mounted, and neither the token nor the fleet secret", s.Name, f)
				}
			}
			if f := m.flag("fleet-secret-file"); f != "" && !files[f] {
				t.Errorf("%s: SHARDVISOR_FLEET_SECRET_FILE %q is not a secret's file", s.Name, f)
			}
			for k := range s.Environment {
				if k == "DISCORD_TOKEN" {
					t.Errorf("%s: DISCORD_TOKEN in the environment: use the secret file", s.Name)
				}
			}
			if dir := m.flag("session-dir"); m.mode() == "run" && dir != "" {
				onVolume := false
				for _, v := range s.Volumes {
					onVolume = onVolume || v.Type == types.VolumeTypeVolume && v.Target == dir && !v.ReadOnly
				}
				if !onVolume {
					t.Errorf("%s: SHARDVISOR_SESSION_DIR %q is not a named volume's mount point: the sessions would go with the container", s.Name, dir)
				}
				for _, o := range p.Services {
					for _, v := range o.Volumes {
						for _, mine := range s.Volumes {
							if o.Name != s.Name && v.Source == mine.Source {
								t.Errorf("%s and %s share the volume %s: one session dir per container", s.Name, o.Name, v.Source)
							}
						}
					}
				}
			}
			if m.mode() == "run" {
				shutdown, err := time.ParseDuration(m.flag("shutdown-timeout"))
				if s.StopGracePeriod == nil || err != nil || time.Duration(*s.StopGracePeriod) < shutdown+5*time.Second {
					t.Errorf("%s: stop_grace_period %v not comfortably above the shutdown timeout %q", s.Name, s.StopGracePeriod, m.flag("shutdown-timeout"))
				}
			}
			if p == split {
				switch m.mode() {
				case "identify-queue":
					q := m
					splitQueue = &q
				case "run":
					splitClusters = append(splitClusters, m)
				}
			}
		}
	}
	var singleMembers []member
	for _, s := range single.Services {
		singleMembers = append(singleMembers, composeMember(t, img, s))
	}
	if splitQueue == nil || len(splitClusters) == 0 {
		t.Fatalf("profile split: want an identify-queue service and cluster services")
	}
	checkMemberFlags(t, bins.Shardvisor, append(append(slices.Clone(singleMembers), *splitQueue), splitClusters...))

	// The split layout: one plan, every cluster once, one queue for all.
	p := planOf(t, splitClusters[0])
	seen := map[int]string{}
	for _, m := range splitClusters {
		if q := planOf(t, m); q != p {
			t.Errorf("%s plans %+v, %s %+v: every container must agree", m.name, q, splitClusters[0].name, p)
		}
		ids := m.flag("cluster-ids")
		id, err := strconv.Atoi(ids)
		if err != nil {
			t.Errorf("%s: -cluster-ids %q: want one cluster per container", m.name, ids)
			continue
		}
		if other, dup := seen[id]; dup {
			t.Errorf("cluster %d runs in %s and %s", id, other, m.name)
		}
		seen[id] = m.name
		checkQueueURL(t, m, "identify-queue", splitQueue.flag("listen"))
		// Every container forwards fleet calls to every cluster's, with
		// the secret.
		peers := strings.Split(m.flag("fleet-peers"), ",")
		for _, other := range split.Services {
			if strings.HasPrefix(other.Name, "cluster-") && !slices.Contains(peers, other.Name+":9851") {
				t.Errorf("%s: -fleet-peers %q lacks %s:9851", m.name, m.flag("fleet-peers"), other.Name)
			}
		}
		if m.flag("fleet-secret-file") == "" {
			t.Errorf("%s: fleet peers without the fleet secret", m.name)
		}
		if s := split.Services[m.name]; s.DependsOn == nil || s.DependsOn["identify-queue"].Condition == "" {
			t.Errorf("%s does not depend on identify-queue", m.name)
		}
	}
	for id := range p.clusters {
		if seen[id] == "" {
			t.Errorf("no container runs cluster %d of %d", id, p.clusters)
		}
	}
	// The image's HEALTHCHECK asks a supervisor's port; the queue answers
	// /readyz on its own, so its health check must name that port.
	_, queuePort, _ := net.SplitHostPort(splitQueue.flag("listen"))
	wantCheck := "healthcheck -addr 127.0.0.1:" + queuePort
	if q := split.Services["identify-queue"]; q.HealthCheck == nil || q.HealthCheck.Disable || !strings.Contains(strings.Join(q.HealthCheck.Test, " "), wantCheck) {
		t.Errorf("identify-queue: its health check must run %q", wantCheck)
	}
	singlePlan := planOf(t, singleMembers[0])
	if singlePlan != p {
		t.Errorf("the two layouts plan differently: %+v and %+v", singlePlan, p)
	}
	if t.Failed() {
		return
	}

	t.Run("split layout runs", func(t *testing.T) {
		b := startLiveBot(t, bins, p.shards, splitQueue, splitClusters)
		b.check(t, p)
		b.stop(t)
	})
	t.Run("single layout runs", func(t *testing.T) {
		b := startLiveBot(t, bins, p.shards, nil, singleMembers)
		b.check(t, p)
		b.stop(t)
	})
}
