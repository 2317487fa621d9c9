package wire

import "fmt"

// Crash resumes (opt-in, supervisor's -resume-after-crash). A child whose
// Welcome says Checkpoint reports, about once a second, each shard's
// session: its id, the last sequence number discordgo received, and the
// resume URL. The supervisor keeps the last report of each process, out of
// every status, log and metric; when the process crashes, its replacement
// is welcomed with Handoff and fed the report's shards as HandoffShard
// messages without a snapshot, then HandoffEnd: it RESUMEs with an empty
// cache, and Discord replays what came after the reported sequence. The
// report lags by up to a second, so a few events arrive twice: delivery is
// at least once.

// TypeSessionCheckpoint [C→P] is the child's report of its sessions.
const TypeSessionCheckpoint Type = 18

// MaxCheckpoint bounds a checkpoint's payload: a shard's entry is at most
// its session id, a sequence number and a resume URL.
const MaxCheckpoint = MaxShardsInMsg * (maxSessionID + maxText + 128)

// Handoff causes: why a replacement is handed its sessions. They are the
// cause label of the cluster's handoff metrics.
const (
	CauseRollingRestart    = "rolling_restart"    // a rolling restart's old process handed over
	CauseCrash             = "crash"              // the last checkpoint of a process that crashed
	CauseSupervisorRestart = "supervisor_restart" // records a stopped supervisor left behind
)

// SessionCheckpoint is one report: the shards that have a session. Each
// entry is a HandoffShard without a snapshot, as it will be fed to a
// replacement; its session id prints as "[redacted]".
type SessionCheckpoint struct {
	Shards []HandoffShard `json:"shards"`
}

func (*SessionCheckpoint) Type() Type { return TypeSessionCheckpoint }

func (m *SessionCheckpoint) Validate() error {
	if len(m.Shards) > MaxShardsInMsg {
		return fmt.Errorf("%d shards", len(m.Shards))
	}
	seen := make(map[int]bool, len(m.Shards))
	for i := range m.Shards {
		s := &m.Shards[i]
		if err := s.Validate(); err != nil {
			return err
		}
		switch {
		case seen[s.Shard]:
			return fmt.Errorf("shard %d twice", s.Shard)
		case s.SessionID.Empty():
			return fmt.Errorf("shard %d: no session id", s.Shard)
		case len(s.Snapshot) > 0 || s.More || s.Reason != "":
			return fmt.Errorf("shard %d: a checkpoint carries no snapshot or reason", s.Shard)
		}
		seen[s.Shard] = true
	}
	return nil
}

// Format prints the shard count only, whatever the verb.
func (m *SessionCheckpoint) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "session checkpoint of %d shards", len(m.Shards))
}
