package deploy

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/shardvisor/shardvisor/internal/harness"
)

// image is the Dockerfile as BuildKit reads it.
type image struct {
	stages   []instructions.Stage
	args     map[string]string // global ARGs and their defaults
	warnings []string          // BuildKit's lint rules that fired
}

// parseDockerfile parses the repository's Dockerfile with BuildKit's own
// parser and instruction reader, its lint rules on.
func parseDockerfile(t *testing.T) image {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ast, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	var img image
	for _, w := range ast.Warnings {
		img.warnings = append(img.warnings, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		img.warnings = append(img.warnings, fmt.Sprintf("%s: %s (line %d)", rule, msg, line(loc)))
	}})
	stages, metaArgs, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	img.stages, img.args = stages, map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				img.args[kv.Key] = *kv.Value
			}
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a build stage and a final one", len(stages))
	}
	return img
}

func line(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

func (img image) final() instructions.Stage { return img.stages[len(img.stages)-1] }

// stage returns the stage named name.
func (img image) stage(t *testing.T, name string) instructions.Stage {
	t.Helper()
	for _, s := range img.stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return instructions.Stage{}
}

// commands returns a stage's commands of one type.
func commands[T instructions.Command](s instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// only returns the one command of a type in a stage (the last, as Docker
// uses it, failing if there is none).
func only[T instructions.Command](t *testing.T, s instructions.Stage, what string) T {
	t.Helper()
	cs := commands[T](s)
	if len(cs) == 0 {
		t.Fatalf("the final stage has no %s", what)
	}
	return cs[len(cs)-1]
}

// env returns the ENV a stage sets.
func env(s instructions.Stage) map[string]string {
	vars := map[string]string{}
	for _, e := range commands[*instructions.EnvCommand](s) {
		for _, kv := range e.Env {
			vars[kv.Key] = kv.Value
		}
	}
	return vars
}

// buildRun returns the build stage's RUN that builds shardvisor.
func (img image) buildRun(t *testing.T) *instructions.RunCommand {
	t.Helper()
	for _, r := range commands[*instructions.RunCommand](img.stage(t, "build")) {
		if strings.Contains(strings.Join(r.CmdLine, " "), "go build") {
			return r
		}
	}
	t.Fatal("the build stage has no RUN with go build")
	return nil
}

// binary returns where the final stage puts shardvisor and where it
// copies it from in the build stage.
func (img image) binary(t *testing.T) (dest, src string) {
	t.Helper()
	for _, c := range commands[*instructions.CopyCommand](img.final()) {
		if c.From == "build" && len(c.SourcePaths) == 1 {
			return c.DestPath, c.SourcePaths[0]
		}
	}
	t.Fatal("the final stage copies no single file from the build stage")
	return "", ""
}

// user returns the final stage's USER as numbers.
func (img image) user(t *testing.T) (uid, gid int) {
	t.Helper()
	u := only[*instructions.UserCommand](t, img.final(), "USER").User
	us, gs, _ := strings.Cut(u, ":")
	var err1, err2 error
	uid, err1 = strconv.Atoi(us)
	gid, err2 = strconv.Atoi(gs)
	if err1 != nil || err2 != nil {
		t.Fatalf("USER %q: want numeric uid:gid (Kubernetes' runAsNonRoot can check only a numeric user)", u)
	}
	return uid, gid
}

// TestDockerfile checks the Dockerfile as BuildKit parses it: lint clean,
// multi-stage with a static build, a minimal non-root final image, the
// supervisor as PID 1 through an exec-form ENTRYPOINT, STOPSIGNAL SIGTERM,
// a HEALTHCHECK that needs no shell, and settings that are real flags.
func TestDockerfile(t *testing.T) {
	img := parseDockerfile(t)
	bins := harness.Build(t)
	known := harness.Flags(t, bins.Shardvisor, "run")
	final := img.final()

	t.Run("lint clean", func(t *testing.T) {
		for _, w := range img.warnings {
			t.Errorf("BuildKit warns: %s", w)
		}
	})
	t.Run("build stage: the module's Go, cross-compiled on the build platform", func(t *testing.T) {
		build := img.stage(t, "build")
		if !strings.HasPrefix(build.BaseName, "golang:${GO_VERSION}") || build.Platform != "$BUILDPLATFORM" {
			t.Errorf("build stage FROM --platform=%s %s; want --platform=$BUILDPLATFORM golang:${GO_VERSION}", build.Platform, build.BaseName)
		}
		gomod, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
		if m == nil || img.args["GO_VERSION"] != string(m[1]) {
			t.Errorf("ARG GO_VERSION=%s; go.mod says go %s", img.args["GO_VERSION"], m[1])
		}
	})
	t.Run("static build", func(t *testing.T) {
		run := img.buildRun(t)
		cmd := strings.Join(run.CmdLine, " ")
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/shardvisor", "GOOS=$TARGETOS", "GOARCH=$TARGETARCH"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("the build's RUN lacks %s: %s", want, cmd)
			}
		}
		if _, src := img.binary(t); !strings.Contains(cmd, "-o "+src) {
			t.Errorf("the final stage copies %s, which the build's RUN does not write: %s", src, cmd)
		}
	})
	t.Run("minimal final image", func(t *testing.T) {
		if final.BaseName != "scratch" && !strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") {
			t.Errorf("final stage FROM %s; want scratch or distroless/static", final.BaseName)
		}
		if runs := commands[*instructions.RunCommand](final); len(runs) > 0 {
			t.Errorf("the final stage RUNs %q: it has no shell", runs[0].CmdLine)
		}
	})
	t.Run("non-root user", func(t *testing.T) {
		if uid, gid := img.user(t); uid == 0 || gid == 0 {
			t.Errorf("USER %d:%d: want a user other than root", uid, gid)
		}
	})
	t.Run("the supervisor is PID 1: exec-form ENTRYPOINT", func(t *testing.T) {
		ep := only[*instructions.EntrypointCommand](t, final, "ENTRYPOINT")
		dest, _ := img.binary(t)
		if ep.PrependShell || len(ep.CmdLine) != 1 || ep.CmdLine[0] != dest {
			t.Errorf("ENTRYPOINT %q (shell form: %v); want the exec form [%q]", ep.CmdLine, ep.PrependShell, dest)
		}
		cmd := only[*instructions.CmdCommand](t, final, "CMD")
		if cmd.PrependShell || len(cmd.CmdLine) != 1 || cmd.CmdLine[0] != "run" {
			t.Errorf("CMD %q (shell form: %v); want [\"run\"]", cmd.CmdLine, cmd.PrependShell)
		}
	})
	t.Run("STOPSIGNAL SIGTERM", func(t *testing.T) {
		if s := only[*instructions.StopSignalCommand](t, final, "STOPSIGNAL").Signal; s != "SIGTERM" {
			t.Errorf("STOPSIGNAL %s, want SIGTERM", s)
		}
	})
	t.Run("HEALTHCHECK through shardvisor healthcheck", func(t *testing.T) {
		h := only[*instructions.HealthCheckCommand](t, final, "HEALTHCHECK").Health
		dest, _ := img.binary(t)
		if len(h.Test) < 3 || h.Test[0] != "CMD" || h.Test[1] != dest || h.Test[2] != "healthcheck" {
			t.Errorf("HEALTHCHECK %q; want the exec form CMD [%q, \"healthcheck\"] (no shell in the image)", h.Test, dest)
		}
		if h.Interval <= 0 || h.Timeout <= 0 || h.StartPeriod < time.Minute || h.Retries <= 0 {
			t.Errorf("HEALTHCHECK interval %v timeout %v start period %v retries %d: want them all set, the start period a minute or more (a start is paced IDENTIFYs)",
				h.Interval, h.Timeout, h.StartPeriod, h.Retries)
		}
	})
	t.Run("environment: real flags, sensible container defaults", func(t *testing.T) {
		vars := env(final)
		if err := harness.CheckFlags(known, nil, vars); err != nil {
			t.Error(err)
		}
		if err := harness.ParseCheck(bins.Shardvisor, []string{"run"}, vars); err != nil {
			t.Error(err)
		}
		host, port, _ := strings.Cut(vars["SHARDVISOR_METRICS_ADDR"], ":")
		if host != "0.0.0.0" {
			t.Errorf("SHARDVISOR_METRICS_ADDR=%s: in a container Prometheus and the probes come from outside: want 0.0.0.0:PORT", vars["SHARDVISOR_METRICS_ADDR"])
		}
		exposed := false
		for _, e := range commands[*instructions.ExposeCommand](final) {
			exposed = exposed || slicesContains(e.Ports, port)
		}
		if !exposed {
			t.Errorf("the metrics port %s is not EXPOSEd", port)
		}
		// docker stop waits 10 s by default before SIGKILL.
		if d, err := time.ParseDuration(vars["SHARDVISOR_SHUTDOWN_TIMEOUT"]); err != nil || d > 8*time.Second {
			t.Errorf("SHARDVISOR_SHUTDOWN_TIMEOUT=%q: want at most 8s, inside docker stop's default 10 s", vars["SHARDVISOR_SHUTDOWN_TIMEOUT"])
		}
		for _, s := range img.stages {
			for k := range env(s) {
				if strings.Contains(k, "TOKEN") {
					t.Errorf("ENV %s in stage %s: a token never goes into an image", k, s.Name)
				}
			}
		}
		for k := range img.args {
			if strings.Contains(k, "TOKEN") {
				t.Errorf("ARG %s: a token never goes into an image (build args are in its history)", k)
			}
		}
	})
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if strings.TrimSuffix(x, "/tcp") == v {
			return true
		}
	}
	return false
}

// buildContext copies what the Docker build context holds after
// .dockerignore (with Docker's own pattern matcher) into a new directory.
func buildContext(t *testing.T) string {
	t.Helper()
	root := harness.RepoRoot(t)
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if skip {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		return copyFile(p, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildAsDockerfile runs the build stage's RUN (its own shell command,
// ARGs as variables the way BuildKit passes them) on what .dockerignore
// leaves of the repository, and returns the binary the final stage would
// copy. Only /out moves into a temporary directory.
func buildAsDockerfile(t *testing.T, img image) string {
	t.Helper()
	ctx := buildContext(t)
	for _, need := range []string{"go.mod", "go.sum", "cmd/shardvisor"} {
		if _, err := os.Stat(filepath.Join(ctx, need)); err != nil {
			t.Fatalf(".dockerignore leaves %s out of the build context", need)
		}
	}
	out := t.TempDir()
	_, src := img.binary(t)
	run := img.buildRun(t)
	script := strings.ReplaceAll(strings.Join(run.CmdLine, " "), filepath.Dir(src)+"/", out+"/")
	vars := append(os.Environ(), "TARGETOS=linux", "TARGETARCH="+runtime.GOARCH, "VERSION=test-image")
	dctx, cancel := harness.Deadline()
	defer cancel()
	cmd := []string{"sh", "-c", "cd \"$0\" && " + script, ctx}
	if o, err := harness.Run(dctx, vars, "", cmd...); err != nil {
		t.Fatalf("the Dockerfile's build command, on the build context: %v\n%s\n%s", err, script, o)
	}
	return filepath.Join(out, filepath.Base(src))
}

// TestImage builds shardvisor the way the Dockerfile does, from the build
// context .dockerignore leaves, checks that the binary is static, measures
// it, then runs it as the image runs it (TestContainer's checks).
func TestImage(t *testing.T) {
	img := parseDockerfile(t)
	bin := buildAsDockerfile(t, img)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the image's binary is dynamically linked (%v): it would not run on %s", p.Type, img.final().BaseName)
		}
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzipSize(t, bin)
	t.Logf("image layer: the static binary is %.1f MiB (%.1f MiB gzipped, as a registry stores the layer); base %s adds about 2 MiB (the distroless project's figure, not measured here)",
		float64(fi.Size())/(1<<20), float64(gz)/(1<<20), img.final().BaseName)

	t.Run("container", func(t *testing.T) { runContainer(t, img, bin) })
}

func gzipSize(t *testing.T, path string) int64 {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var n countWriter
	zw := gzip.NewWriter(&n)
	if _, err := io.Copy(zw, in); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return int64(n)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }
