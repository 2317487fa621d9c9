package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier tells systemd (Type=notify) the truth about the supervisor:
//
//   - READY=1 once every cluster is ready, so that `systemctl start` returns
//     only then;
//   - STATUS= kept current ("58/64 shards ready, 7/8 clusters");
//   - EXTEND_TIMEOUT_USEC while startup keeps making progress: a thousand
//     shards at one IDENTIFY per 5 s per bucket take longer than any sane
//     TimeoutStartSec, but a start that stops progressing still times out;
//   - WATCHDOG=1 only while the main loop turns (WatchdogSec=);
//   - STOPPING=1 when the stop begins.
//
// Without NOTIFY_SOCKET it does nothing.
type Notifier struct {
	sup *Supervisor
	log *slog.Logger
	// Progress is how long a start may go without progress (a shard
	// becoming ready) before the extensions stop.
	Progress time.Duration
	// Tick is how often STATUS and the watchdog are refreshed.
	Tick time.Duration
	// notify sends a state; daemon.SdNotify in production.
	notify func(state string) (bool, error)
	// watchdog returns WatchdogSec as the supervisor should honour it.
	watchdog func() (time.Duration, error)
}

// NewNotifier returns a notifier for s.
func NewNotifier(s *Supervisor, logger *slog.Logger) *Notifier {
	return &Notifier{sup: s, log: logger, Progress: 2 * time.Minute, Tick: time.Second,
		notify:   func(state string) (bool, error) { return daemon.SdNotify(false, state) },
		watchdog: func() (time.Duration, error) { return daemon.SdWatchdogEnabled(false) },
	}
}

// Run notifies until ctx is done, then sends STOPPING=1.
func (n *Notifier) Run(ctx context.Context) error {
	if ok, err := n.notify("STATUS=starting"); !ok {
		if err != nil {
			n.log.Warn("systemd notify", "err", err)
		}
		<-ctx.Done()
		return nil // not under systemd (or no Type=notify): nothing to say
	}
	wd, err := n.watchdog()
	if err != nil {
		n.log.Warn("systemd watchdog settings", "err", err)
	}
	tick := n.Tick
	if wd > 0 {
		tick = min(tick, wd/2)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var (
		ready        bool
		lastStatus   string
		lastProgress = time.Now()
		bestReady    = -1
		extendedAt   time.Time
		pinged       time.Time
	)
	for {
		changed := n.sup.store.Changed()
		snap := n.sup.store.Snapshot()
		now := time.Now()
		status := ""
		if s := snap.Summary(); s != lastStatus {
			status, lastStatus = "STATUS="+s, s
		}
		if snap.ShardsReady > bestReady {
			bestReady, lastProgress = snap.ShardsReady, now
		}
		switch {
		case !ready && snap.Ready:
			ready = true
			n.send("READY=1\n" + status) // one datagram: systemd shows the ready status at once
			status = ""
			n.log.Info("told systemd the supervisor is ready", "status", lastStatus)
		case !ready && now.Sub(lastProgress) < n.Progress && now.Sub(extendedAt) >= n.Progress/4:
			// Progress within the window: allow one more window from now.
			n.send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", n.Progress.Microseconds()))
			extendedAt = now
		}
		if status != "" {
			n.send(status)
		}
		if wd > 0 && now.Sub(pinged) >= tick/2 && n.sup.Healthy(wd/2) {
			n.send("WATCHDOG=1")
			pinged = now
		}
		select {
		case <-ctx.Done():
			n.send("STOPPING=1")
			return nil
		case <-n.sup.stopping:
			n.send("STOPPING=1\nSTATUS=stopping: " + lastStatus)
			<-ctx.Done()
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

func (n *Notifier) send(state string) {
	if _, err := n.notify(state); err != nil {
		n.log.Warn("systemd notify", "state", state, "err", err)
	}
}
