package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
	"go.yaml.in/yaml/v3"

	"github.com/shardvisor/shardvisor/internal/harness"
)

// TestWorkflowsLint runs actionlint, as a library (so it is always there:
// no separate install to forget, nothing to skip), over every workflow in
// .github/workflows: syntax, expressions, job and step references, known
// actions' inputs, and, where shellcheck is installed (.ci/run installs
// it), the shell of every run: step.
func TestWorkflowsLint(t *testing.T) {
	root := harness.RepoRoot(t)
	var out bytes.Buffer
	opts := &actionlint.LinterOptions{WorkingDir: root}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		opts.Shellcheck = sc
	} else if os.Getenv("CI") != "" {
		t.Errorf("CI without shellcheck: .ci/run should have installed it for actionlint's run: checks")
	} else {
		t.Logf("no shellcheck here: actionlint does not check the run: scripts (.ci/run installs it)")
	}
	l, err := actionlint.NewLinter(&out, opts)
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintRepository(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Errorf("actionlint: %s:%d:%d: %s [%s]", e.Filepath, e.Line, e.Column, e.Message, e.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(root, ".github", "workflows", "*.yml"))
	if len(files) < 2 {
		t.Errorf("%d workflows; want ci.yml and image.yml", len(files))
	}
}

// workflow is the part of a workflow file these tests read.
type workflow struct {
	On          map[string]any    `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]struct {
		Uses        string            `yaml:"uses"`
		Needs       any               `yaml:"needs"`
		Permissions map[string]string `yaml:"permissions"`
		Steps       []struct {
			ID   string            `yaml:"id"`
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

func readWorkflow(t *testing.T, name string) workflow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), ".github", "workflows", name))
	if err != nil {
		t.Fatal(err)
	}
	var w workflow
	if err := yaml.Unmarshal(b, &w); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return w
}

// minMajor is the oldest major version of each action these workflows may
// use: the current ones when they were written.
func minMajor() map[string]int {
	return map[string]int{
		"actions/checkout": 6, "actions/setup-go": 6, "docker/setup-buildx-action": 4,
		"docker/login-action": 4, "docker/metadata-action": 6, "docker/build-push-action": 7,
	}
}

// TestImageWorkflow checks the publishing pipeline: on pushes to main, to
// ghcr.io with the job's GITHUB_TOKEN (packages: write), tagged by
// metadata-action, built and pushed by build-push-action from the
// repository's Dockerfile, and only after the CI tests passed.
func TestImageWorkflow(t *testing.T) {
	w := readWorkflow(t, "image.yml")
	push, _ := w.On["push"].(map[string]any)
	if branches, _ := push["branches"].([]any); len(branches) == 0 || branches[0] != "main" {
		t.Errorf("image.yml runs on push to %v; want main", push["branches"])
	}
	publish, ok := w.Jobs["publish"]
	if !ok {
		t.Fatal("image.yml has no publish job")
	}
	if publish.Permissions["packages"] != "write" {
		t.Errorf("the publish job's permissions %v: pushing to ghcr.io needs packages: write", publish.Permissions)
	}
	if w.Permissions["packages"] == "write" {
		t.Errorf("packages: write for the whole workflow; only the publish job needs it")
	}
	if test := w.Jobs["test"]; test.Uses != "./.github/workflows/ci.yml" || publish.Needs != "test" {
		t.Errorf("publish needs %v and test uses %q: the image must wait for the CI tests", publish.Needs, test.Uses)
	}
	used := map[string]bool{}
	for _, s := range publish.Steps {
		action, ref, _ := strings.Cut(s.Uses, "@")
		if action == "" {
			continue
		}
		used[action] = true
		major, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(ref, ".", 2)[0], "v"))
		if want, known := minMajor()[action]; known && (err != nil || major < want) {
			t.Errorf("%s: want v%d or later", s.Uses, want)
		}
		switch action {
		case "docker/login-action":
			if s.With["registry"] != "ghcr.io" || s.With["password"] != "${{ secrets.GITHUB_TOKEN }}" {
				t.Errorf("login-action with %v; want ghcr.io with the job's GITHUB_TOKEN", s.With)
			}
		case "docker/metadata-action":
			if !strings.HasPrefix(s.With["images"], "ghcr.io/") || s.ID == "" {
				t.Errorf("metadata-action (id %q) images %q; want ghcr.io/... and an id to read its outputs", s.ID, s.With["images"])
			}
		case "docker/build-push-action":
			if s.With["push"] != "true" || !strings.Contains(s.With["tags"], "outputs.tags") || !strings.Contains(s.With["labels"], "outputs.labels") {
				t.Errorf("build-push-action with %v; want push: true and metadata-action's tags and labels", s.With)
			}
			if s.With["context"] != "." || (s.With["file"] != "" && s.With["file"] != "Dockerfile") {
				t.Errorf("build-push-action builds %q/%q; want the repository's Dockerfile", s.With["context"], s.With["file"])
			}
		}
	}
	for _, a := range []string{"actions/checkout", "docker/login-action", "docker/metadata-action", "docker/build-push-action"} {
		if !used[a] {
			t.Errorf("the publish job does not use %s", a)
		}
	}
}

// TestCIWorkflow checks that CI runs .ci/run, the one test entry point,
// on pull requests and for the image workflow.
func TestCIWorkflow(t *testing.T) {
	w := readWorkflow(t, "ci.yml")
	for _, ev := range []string{"pull_request", "workflow_call", "push"} {
		if _, ok := w.On[ev]; !ok {
			t.Errorf("ci.yml does not run on %s", ev)
		}
	}
	runs := false
	for _, j := range w.Jobs {
		for _, s := range j.Steps {
			runs = runs || strings.Contains(s.Run, ".ci/run")
			action, ref, _ := strings.Cut(s.Uses, "@")
			major, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(ref, ".", 2)[0], "v"))
			if want, known := minMajor()[action]; known && (err != nil || major < want) {
				t.Errorf("%s: want v%d or later", s.Uses, want)
			}
		}
	}
	if !runs {
		t.Error("no step of ci.yml runs .ci/run")
	}
}
