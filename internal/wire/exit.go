package wire

// ExitConfig is the exit status with which a cluster says that starting it
// again cannot help: a fatal gateway close (bad token, disallowed intents,
// a shard identity Discord refuses) or a configuration that makes no sense.
// The supervisor then stops every cluster and exits with it too, so that
// no session start is spent on a restart (EX_CONFIG from sysexits.h; the
// systemd unit's RestartPreventExitStatus). Any other status is a crash,
// restarted with a backoff.
const ExitConfig = 78
