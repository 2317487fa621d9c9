package cli

import (
	"bufio"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardvisor/shardvisor/internal/identify"
	"github.com/shardvisor/shardvisor/supervisor"
)

// Per cluster process the supervisor holds descriptors (its end of the
// channel, the pidfd, the child's pipes while it starts) and the cluster
// needs memory (a Go runtime, discordgo, its shards' sessions) before any
// guild is cached: the floor checked against this machine.
const (
	fdsPerCluster    = 4
	fdsBase          = 64 // listeners, scrapes, the log
	memoryPerCluster = 16 << 20
)

// machine is what this machine allows the supervisor; 0 means unknown or
// unlimited.
type machine struct {
	procs  uint64 // RLIMIT_NPROC
	files  uint64 // RLIMIT_NOFILE
	memory uint64 // MemAvailable
}

// hostLimits reads this machine's limits.
func hostLimits() machine {
	var m machine
	var rl syscall.Rlimit
	const rlimitNproc = 6 // RLIMIT_NPROC on Linux
	if syscall.Getrlimit(rlimitNproc, &rl) == nil && rl.Cur != math.MaxUint64 {
		m.procs = rl.Cur
	}
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur != math.MaxUint64 {
		m.files = rl.Cur
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
				if kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					m.memory = kb << 10
				}
			}
		}
	}
	return m
}

// checkPlanLimits refuses, before anything starts, a plan that cannot run
// here (its shape was checked by supervisor.NewPlan): more shards than
// Discord's session start limit could ever start (budget known), or more
// cluster processes than this machine's process, descriptor or memory
// limits allow. by is the flag that sized the clusters. A plan that needs
// more session starts than are left now only gets a warning: the queue
// holds the rest until Discord's reset.
func checkPlanLimits(plan supervisor.Plan, by string, budget *identify.Budget, m machine, log *slog.Logger) error {
	shards := 0
	for _, c := range plan.Clusters {
		shards += len(c.Shards)
	}
	if budget != nil && budget.Total > 0 && plan.ShardCount > budget.Total {
		return configError(fmt.Errorf("-shards %d: more shards than Discord's session start limit of %d per window could ever start", plan.ShardCount, budget.Total))
	}
	n := uint64(len(plan.Clusters))
	if m.procs > 0 && n >= m.procs {
		return configError(fmt.Errorf("%s: %d cluster processes; this machine's process limit (RLIMIT_NPROC) is %d", by, n, m.procs))
	}
	if need := fdsBase + fdsPerCluster*n; m.files > 0 && need > m.files {
		return configError(fmt.Errorf("%s: %d cluster processes need about %d file descriptors; the limit (RLIMIT_NOFILE) is %d", by, n, need, m.files))
	}
	if need := memoryPerCluster * n; m.memory > 0 && need > m.memory {
		return configError(fmt.Errorf("%s: %d cluster processes need at least %d MiB of memory; %d MiB are available", by, n, need>>20, m.memory>>20))
	}
	if budget != nil && budget.Remaining >= 0 && shards > budget.Remaining {
		log.Warn("the plan needs more session starts than Discord reports left; the rest wait for the reset",
			"shards", shards, "session_starts_remaining", budget.Remaining, "reset_in", time.Until(budget.ResetAt).Round(time.Second))
	}
	return nil
}
