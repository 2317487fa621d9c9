package cluster

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// knownEvents lists Discord's gateway dispatch events: these are counted by
// type, anything else as "other", so that the type label stays bounded.
var knownEvents = [...]string{
	"READY", "RESUMED", "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
	"AUTO_MODERATION_RULE_CREATE", "AUTO_MODERATION_RULE_UPDATE", "AUTO_MODERATION_RULE_DELETE", "AUTO_MODERATION_ACTION_EXECUTION",
	"CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "CHANNEL_PINS_UPDATE",
	"THREAD_CREATE", "THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC", "THREAD_MEMBER_UPDATE", "THREAD_MEMBERS_UPDATE",
	"ENTITLEMENT_CREATE", "ENTITLEMENT_UPDATE", "ENTITLEMENT_DELETE",
	"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_BAN_ADD", "GUILD_BAN_REMOVE",
	"GUILD_EMOJIS_UPDATE", "GUILD_STICKERS_UPDATE", "GUILD_INTEGRATIONS_UPDATE",
	"GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE", "GUILD_MEMBERS_CHUNK",
	"GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE", "GUILD_ROLE_DELETE",
	"GUILD_SCHEDULED_EVENT_CREATE", "GUILD_SCHEDULED_EVENT_UPDATE", "GUILD_SCHEDULED_EVENT_DELETE",
	"GUILD_SCHEDULED_EVENT_USER_ADD", "GUILD_SCHEDULED_EVENT_USER_REMOVE",
	"GUILD_SOUNDBOARD_SOUND_CREATE", "GUILD_SOUNDBOARD_SOUND_UPDATE", "GUILD_SOUNDBOARD_SOUND_DELETE", "GUILD_SOUNDBOARD_SOUNDS_UPDATE",
	"INTEGRATION_CREATE", "INTEGRATION_UPDATE", "INTEGRATION_DELETE", "INTERACTION_CREATE",
	"INVITE_CREATE", "INVITE_DELETE",
	"MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK",
	"MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL", "MESSAGE_REACTION_REMOVE_EMOJI",
	"MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE",
	"PRESENCE_UPDATE", "STAGE_INSTANCE_CREATE", "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE",
	"SUBSCRIPTION_CREATE", "SUBSCRIPTION_UPDATE", "SUBSCRIPTION_DELETE",
	"TYPING_START", "USER_UPDATE", "VOICE_CHANNEL_EFFECT_SEND", "VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE", "WEBHOOKS_UPDATE",
}

// clusterMetrics are a cluster process's own metrics; the supervisor adds
// the cluster_id label when it merges them.
type clusterMetrics struct {
	events       *prometheus.CounterVec
	interactions *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	known        map[string]bool
	commands     map[string]bool
}

func newClusterMetrics(reg prometheus.Registerer, commands []string, shards func() []*shard) *clusterMetrics {
	m := &clusterMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_gateway_events_total",
			Help: "Gateway dispatches received, by event type (unknown types as other).",
		}, []string{"type"}),
		interactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardvisor_interactions_total",
			Help: "Slash command interactions handled, by command and outcome (ok, error, panic, unknown_command).",
		}, []string{"command", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardvisor_interaction_duration_seconds",
			Help:    "Time a command took to run, its reply included.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"command"}),
		known:    map[string]bool{},
		commands: map[string]bool{},
	}
	for _, e := range knownEvents {
		m.known[e] = true
	}
	for _, c := range commands {
		m.commands[c] = true
		for _, o := range []string{OutcomeOK, OutcomeError, OutcomePanic} {
			m.interactions.WithLabelValues(c, o) // exported at 0 from the start
		}
		// The histogram too: else a process's first observations of a
		// command arrive in its first sample, which rate() cannot see.
		m.duration.WithLabelValues(c)
	}
	reg.MustRegister(m.events, m.interactions, m.duration, &shardCollector{shards: shards})
	return m
}

func (m *clusterMetrics) event(t string) {
	if !m.known[t] {
		t = "other"
	}
	m.events.WithLabelValues(t).Inc()
}

func (m *clusterMetrics) interaction(command, outcome string, took time.Duration) {
	if !m.commands[command] {
		command = "unknown"
	}
	m.interactions.WithLabelValues(command, outcome).Inc()
	if outcome != OutcomeUnknown {
		m.duration.WithLabelValues(command).Observe(took.Seconds())
	}
}

var (
	shardStateDesc = prometheus.NewDesc("shardvisor_shard_state",
		"1 for the state each shard is in, 0 for the others.", []string{"shard_id", "state"}, nil)
	shardLatencyDesc = prometheus.NewDesc("shardvisor_shard_heartbeat_latency_seconds",
		"The shard's last gateway heartbeat round trip.", []string{"shard_id"}, nil)
	shardGuildsDesc = prometheus.NewDesc("shardvisor_shard_guilds",
		"Guilds on the shard.", []string{"shard_id"}, nil)
	shardDispatchesDesc = prometheus.NewDesc("shardvisor_shard_dispatches_total",
		"Gateway dispatches the shard received.", []string{"shard_id"}, nil)
	shardReconnectsDesc = prometheus.NewDesc("shardvisor_shard_reconnects_total",
		"Reconnects of the shard, by kind: resume, or identify (a new session).", []string{"shard_id", "kind"}, nil)
	shardStartsDesc = prometheus.NewDesc("shardvisor_shard_session_starts_total",
		"IDENTIFYs the shard sent in this process, each one of the day's session starts.", []string{"shard_id"}, nil)
)

// shardCollector reads every shard's figures at scrape time.
type shardCollector struct{ shards func() []*shard }

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{shardStateDesc, shardLatencyDesc, shardGuildsDesc, shardDispatchesDesc, shardReconnectsDesc, shardStartsDesc} {
		ch <- d
	}
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	for _, sh := range c.shards() {
		st := sh.status()
		sh.mu.Lock()
		n := sh.counts
		sh.mu.Unlock()
		id := strconv.Itoa(sh.id)
		for _, s := range wire.ShardStates {
			v := 0.0
			if s == st.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(shardStateDesc, prometheus.GaugeValue, v, id, string(s))
		}
		ch <- prometheus.MustNewConstMetric(shardLatencyDesc, prometheus.GaugeValue, st.Latency.Seconds(), id)
		ch <- prometheus.MustNewConstMetric(shardGuildsDesc, prometheus.GaugeValue, float64(st.Guilds), id)
		ch <- prometheus.MustNewConstMetric(shardDispatchesDesc, prometheus.CounterValue, float64(n.dispatches), id)
		ch <- prometheus.MustNewConstMetric(shardReconnectsDesc, prometheus.CounterValue, float64(n.resumes), id, "resume")
		ch <- prometheus.MustNewConstMetric(shardReconnectsDesc, prometheus.CounterValue, float64(n.reidentifies), id, "identify")
		ch <- prometheus.MustNewConstMetric(shardStartsDesc, prometheus.CounterValue, float64(n.sessionStarts), id)
	}
}
