package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/shardvisor/shardvisor/internal/harness"
)

// manifests are deploy/kubernetes, decoded strictly into Kubernetes' own
// API types: a misspelt or misplaced field fails to decode.
type manifests struct {
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	files        []string
}

// kustomization is the part of kustomization.yaml used here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{statefulSets: map[string]*appsv1.StatefulSet{}, deployments: map[string]*appsv1.Deployment{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}}
	b, err := os.ReadFile(filepath.Join("kubernetes", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %v (kind %q)", err, k.Kind)
	}
	all, _ := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	for _, f := range all {
		if filepath.Base(f) != "kustomization.yaml" && !slices.Contains(k.Resources, filepath.Base(f)) {
			t.Errorf("%s is not among kustomization.yaml's resources", f)
		}
	}
	for _, name := range k.Resources {
		b, err := os.ReadFile(filepath.Join("kubernetes", name))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", name, err)
		}
		m.files = append(m.files, name)
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s, document %d: %v", name, i+1, err)
			}
			var obj interface{ GetName() string }
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 StatefulSet":
				obj = &appsv1.StatefulSet{}
			case "apps/v1 Deployment":
				obj = &appsv1.Deployment{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			default:
				t.Fatalf("%s, document %d: %s %s is not expected here", name, i+1, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s, document %d (%s): %v", name, i+1, meta.Kind, err)
			}
			switch o := obj.(type) {
			case *appsv1.StatefulSet:
				m.statefulSets[o.Name] = o
			case *appsv1.Deployment:
				m.deployments[o.Name] = o
			case *corev1.Service:
				m.services[o.Name] = o
			case *corev1.ConfigMap:
				m.configMaps[o.Name] = o
			}
		}
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// containerEnv is a container's environment as the kubelet builds it for
// pod index podIndex: the image's ENV, then envFrom, then env, with
// $(VAR) references to variables defined before expanded, and the
// downward API's pod-index label.
func (m manifests) containerEnv(t *testing.T, img image, c corev1.Container, podIndex int) (env map[string]string, inherited map[string]bool) {
	t.Helper()
	env, inherited = map[string]string{}, map[string]bool{}
	for k, v := range imageEnv(img) {
		env[k], inherited[k] = v, true
	}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Errorf("container %s: envFrom other than a ConfigMap", c.Name)
			continue
		}
		cm, ok := m.configMaps[from.ConfigMapRef.Name]
		if !ok {
			t.Fatalf("container %s: envFrom ConfigMap %q is not in the manifests", c.Name, from.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
			delete(inherited, k)
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = ref.ReplaceAllStringFunc(e.Value, func(s string) string {
				if v, ok := env[s[2:len(s)-1]]; ok {
					return v
				}
				return s // Kubernetes leaves an undefined reference as it is
			})
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.labels['apps.kubernetes.io/pod-index']":
			env[e.Name] = strconv.Itoa(podIndex)
		default:
			t.Errorf("container %s: env %s from %+v: only the pod-index label is expected", c.Name, e.Name, e.ValueFrom)
		}
		delete(inherited, e.Name)
	}
	return env, inherited
}

func imageEnv(img image) map[string]string { return env(img.final()) }

// portOf resolves a probe's or service's port (name or number) in c.
func portOf(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

// only1 returns the one container of a pod template.
func only1(t *testing.T, what string, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("%s has %d containers, want 1", what, len(spec.Containers))
	}
	return spec.Containers[0]
}

// checkPod checks what both workloads need: the published image, non-root
// as the image's user, the token from a Secret's file and nowhere else,
// and Prometheus scrape annotations for the port serving /metrics.
func checkPod(t *testing.T, img image, what string, tmpl corev1.PodTemplateSpec, c corev1.Container, env map[string]string, metricsPort int32) {
	t.Helper()
	if !strings.HasPrefix(c.Image, "ghcr.io/shardvisor/shardvisor:") {
		t.Errorf("%s: image %q, want ghcr.io/shardvisor/shardvisor:TAG", what, c.Image)
	}
	uid, _ := img.user(t)
	sc := tmpl.Spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != int64(uid) {
		t.Errorf("%s: pod securityContext %+v: want runAsNonRoot and runAsUser %d (the image's USER)", what, sc, uid)
	}
	if csc := c.SecurityContext; csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem || csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: container securityContext %+v: want no privilege escalation, a read-only root, all capabilities dropped", what, csc)
	}
	for _, e := range c.Env {
		if strings.Contains(e.Name, "TOKEN") && e.Name != "SHARDVISOR_TOKEN_FILE" || e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("%s: env %s: the token comes from the Secret mounted as a file only", what, e.Name)
		}
	}
	tokenFile := env["SHARDVISOR_TOKEN_FILE"]
	mounted := false
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, tokenFile)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range tmpl.Spec.Volumes {
			if v.Name != vm.Name || v.Secret == nil || !vm.ReadOnly {
				continue
			}
			for _, it := range v.Secret.Items {
				mounted = mounted || it.Path == rel
			}
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o004 != 0 || *v.Secret.DefaultMode&0o040 == 0 || tmpl.Spec.SecurityContext.FSGroup == nil {
				t.Errorf("%s: token volume mode %v: want group-readable through fsGroup, not world-readable", what, v.Secret.DefaultMode)
			}
		}
	}
	if !mounted {
		t.Errorf("%s: SHARDVISOR_TOKEN_FILE %q is not a file of a read-only Secret volume", what, tokenFile)
	}
	// The root is read-only: a session dir must be a writable volume.
	if dir := env["SHARDVISOR_SESSION_DIR"]; dir != "" {
		onVolume := false
		for _, vm := range c.VolumeMounts {
			for _, v := range tmpl.Spec.Volumes {
				onVolume = onVolume || v.Name == vm.Name && vm.MountPath == dir && !vm.ReadOnly && (v.EmptyDir != nil || v.PersistentVolumeClaim != nil)
			}
		}
		if !onVolume {
			t.Errorf("%s: SHARDVISOR_SESSION_DIR %q is not the mount point of a writable emptyDir or claim", what, dir)
		}
	}
	a := tmpl.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(metricsPort)) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("%s: annotations %v: want prometheus.io/scrape \"true\", port %d, path /metrics", what, a, metricsPort)
	}
	if tmpl.Spec.AutomountServiceAccountToken == nil || *tmpl.Spec.AutomountServiceAccountToken {
		t.Errorf("%s: the pod needs no Kubernetes API token: automountServiceAccountToken: false", what)
	}
}

// TestKubernetes checks deploy/kubernetes: every document decodes
// strictly into Kubernetes' API types; the StatefulSet derives each pod's
// share of the clusters from its pod index and its replica count; its grace
// period is above the shutdown timeout; readiness on /readyz and liveness
// on /healthz of the metrics port; scrape annotations; the token from a
// Secret file; the identify queue is one Deployment behind a Service the
// pods' queue URL names; every flag and variable is real. Then the pods
// run for real as processes (their env as the kubelet builds it) against
// one fake Discord: every shard once, no IDENTIFY too soon, exit 0 on
// SIGTERM.
func TestKubernetes(t *testing.T) {
	img := parseDockerfile(t)
	bins := harness.Build(t)
	m := loadManifests(t)
	if len(m.statefulSets) != 1 || len(m.deployments) != 1 {
		t.Fatalf("%d StatefulSets and %d Deployments; want the bot's and the identify queue's", len(m.statefulSets), len(m.deployments))
	}
	var sts *appsv1.StatefulSet
	for _, s := range m.statefulSets {
		sts = s
	}
	var dep *appsv1.Deployment
	for _, d := range m.deployments {
		dep = d
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 2 {
		t.Fatalf("StatefulSet replicas %v: want several", sts.Spec.Replicas)
	}
	replicas := int(*sts.Spec.Replicas)
	c := only1(t, "the StatefulSet", sts.Spec.Template.Spec)
	pods := make([]member, replicas)
	for i := range pods {
		env, inherited := m.containerEnv(t, img, c, i)
		pods[i] = member{name: fmt.Sprintf("%s-%d", sts.Name, i), args: slices.Clone(c.Args), env: env, inherited: inherited}
		if want := fmt.Sprintf("%d/%d", i, replicas); pods[i].flag("cluster-share") != want {
			t.Errorf("pod %d: -cluster-share %q, want %s: the share comes from the pod index over the replicas", i, pods[i].flag("cluster-share"), want)
		}
	}
	if len(c.Command) > 0 {
		t.Errorf("the bot container sets command %q: keep the image's ENTRYPOINT (the supervisor as PID 1)", c.Command)
	}
	p := planOf(t, pods[0])
	if p.clusters < replicas {
		t.Errorf("%d clusters for %d pods: some pods would run nothing", p.clusters, replicas)
	}

	// Stop: only PID 1 gets SIGTERM, then SIGKILL after the grace period.
	shutdown, err := time.ParseDuration(pods[0].flag("shutdown-timeout"))
	grace := sts.Spec.Template.Spec.TerminationGracePeriodSeconds
	if err != nil || grace == nil || time.Duration(*grace)*time.Second < shutdown+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v not comfortably above the shutdown timeout %q", grace, pods[0].flag("shutdown-timeout"))
	}
	_, port, _ := strings.Cut(pods[0].flag("metrics-addr"), ":")
	metricsPort, _ := strconv.Atoi(port)
	if host, _, _ := strings.Cut(pods[0].flag("metrics-addr"), ":"); host != "0.0.0.0" {
		t.Errorf("-metrics-addr %q: probes and Prometheus come from outside the pod", pods[0].flag("metrics-addr"))
	}
	for name, pr := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name || portOf(c, pr.HTTPGet.Port) != int32(metricsPort) {
			t.Errorf("want a probe on %s of port %d; got %+v", name, metricsPort, pr)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe on %s, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}
	checkPod(t, img, "the StatefulSet", sts.Spec.Template, c, pods[0].env, int32(metricsPort))
	if !selects(sts.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("the StatefulSet's selector %v does not select its pods %v", sts.Spec.Selector.MatchLabels, sts.Spec.Template.Labels)
	}
	if svc, ok := m.services[sts.Spec.ServiceName]; !ok || svc.Spec.ClusterIP != "None" || !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("serviceName %q: want a headless Service selecting the StatefulSet's pods", sts.Spec.ServiceName)
	}

	// The identify queue: one, behind the Service that the pods' URL names.
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("identify queue: replicas %v strategy %q; want exactly one at any time (1, Recreate)", dep.Spec.Replicas, dep.Spec.Strategy.Type)
	}
	qc := only1(t, "the identify queue", dep.Spec.Template.Spec)
	qenv, qinh := m.containerEnv(t, img, qc, 0)
	queue := member{name: dep.Name, args: slices.Clone(qc.Args), env: qenv, inherited: qinh}
	if queue.mode() != "identify-queue" {
		t.Fatalf("the Deployment runs %q, want identify-queue", queue.args)
	}
	_, qport, _ := strings.Cut(queue.flag("listen"), ":")
	qp, _ := strconv.Atoi(qport)
	checkPod(t, img, "the identify queue", dep.Spec.Template, qc, qenv, int32(qp))
	found := false
	for _, svc := range m.services {
		if !selects(svc.Spec.Selector, dep.Spec.Template.Labels) || selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if portOf(qc, sp.TargetPort) == int32(qp) {
				found = true
				checkQueueURL(t, pods[0], svc.Name, fmt.Sprintf(":%d", sp.Port))
			}
		}
	}
	if !found {
		t.Errorf("no Service selects only the identify queue's pod on its port %d", qp)
	}
	for name, pr := range map[string]*corev1.Probe{"readiness": qc.ReadinessProbe, "liveness": qc.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != "/healthz" || portOf(qc, pr.HTTPGet.Port) != int32(qp) {
			t.Errorf("identify queue: want a %s probe on /healthz of port %d; got %+v", name, qp, pr)
		}
	}
	checkMemberFlags(t, bins.Shardvisor, append([]member{queue}, pods...))
	if t.Failed() {
		return
	}

	t.Run("the pods run", func(t *testing.T) {
		// Fewer shards per cluster than in production, the same clusters:
		// the shares are the same, the start is quick.
		live := plan{shards: 2 * p.clusters, perCluster: 2, clusters: p.clusters}
		for i := range pods {
			pods[i] = pods[i].setFlag("shards", strconv.Itoa(live.shards)).setFlag("shards-per-cluster", "2")
		}
		b := startLiveBot(t, bins, live.shards, &queue, pods)
		b.check(t, live)
		b.stop(t)
	})
}

// selects reports whether every label of selector is in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
