package harness

import (
	"os"
	"testing"
)

// Missing ends a test that needs something this machine lacks (root,
// systemd, a namespace, a program): it skips outside CI and fails under
// CI=true, where .ci/run must have provided it, so that a test that never
// runs in CI cannot pass unnoticed.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but %s: .ci/run must provide it", what)
	}
	t.Skip("skipped: " + what)
}
