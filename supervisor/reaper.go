package supervisor

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Reaper reaps processes that ended up as the supervisor's children without
// being started by it: orphans re-parented to PID 1 in a container.
//
// It must not reap the cluster processes: since Go 1.23, exec.Cmd.Wait waits
// through a pidfd, and a reaper that called wait4(-1) would take their exit
// statuses (Wait would then fail with ECHILD). So it looks for zombies among
// its children in /proc, and reaps only those that are not registered. A
// cluster process is registered under the same lock, before Start returns,
// so it can never be seen unregistered.
type Reaper struct {
	log  *slog.Logger
	proc string // /proc
	self int

	mu   sync.Mutex
	ours map[int]bool
	// Reaped counts orphans reaped, for metrics and tests.
	reaped int
}

// NewReaper returns a reaper for this process. A nil logger discards.
func NewReaper(logger *slog.Logger) *Reaper {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Reaper{log: logger, proc: "/proc", self: os.Getpid(), ours: map[int]bool{}}
}

// Start runs start (which starts a process) and registers the pid it
// reports, both under the reaper's lock.
func (r *Reaper) Start(start func() error, pid func() int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := start(); err != nil {
		return err
	}
	r.ours[pid()] = true
	return nil
}

// Forget unregisters pid once its Wait has returned.
func (r *Reaper) Forget(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ours, pid)
}

// Reaped returns how many orphans have been reaped.
func (r *Reaper) Reaped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

// Run reaps on every SIGCHLD, and every `every` in case a signal was
// coalesced, until ctx is done.
func (r *Reaper) Run(ctx context.Context, every time.Duration) error {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		r.ReapOnce()
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-t.C:
		}
	}
}

// ReapOnce reaps every zombie child that the supervisor did not start.
func (r *Reaper) ReapOnce() {
	for _, pid := range r.zombieChildren() {
		r.mu.Lock()
		if !r.ours[pid] {
			var ws syscall.WaitStatus
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == pid {
				r.reaped++
				r.log.Debug("reaped orphan", "pid", pid, "status", ws.ExitStatus())
			}
		}
		r.mu.Unlock()
	}
}

// zombieChildren lists the pids in /proc whose parent is this process and
// whose state is Z.
func (r *Reaper) zombieChildren() []int {
	paths, _ := filepath.Glob(filepath.Join(r.proc, "[0-9]*", "stat"))
	var pids []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		pid, state, ppid, ok := parseStat(b)
		if ok && ppid == r.self && state == 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// parseStat reads pid, state and ppid from /proc/PID/stat. The command name
// sits in parentheses and may itself contain spaces and parentheses, so the
// fields after it are found from the last ')'.
func parseStat(b []byte) (pid int, state byte, ppid int, ok bool) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return 0, 0, 0, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return 0, 0, 0, false
	}
	rest := bytes.Fields(b[closing+1:])
	if len(rest) < 2 || len(rest[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err = strconv.Atoi(string(rest[1]))
	if err != nil {
		return 0, 0, 0, false
	}
	return pid, rest[0][0], ppid, true
}
