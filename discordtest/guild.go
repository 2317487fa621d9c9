package discordtest

import (
	"encoding/json"
	"strconv"
)

// GUILD_CREATE and the objects in it: the guild, its roles, channels,
// threads, emojis, stickers and members, with every field Discord's
// documentation marks as always present (doc.go lists what is left out).

type roleJSON struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Color        int        `json:"color"`  // deprecated, still sent: colors.primary_color
	Colors       roleColors `json:"colors"` // always filled, as on Discord
	Hoist        bool       `json:"hoist"`
	Icon         *string    `json:"icon"`
	UnicodeEmoji *string    `json:"unicode_emoji"`
	Position     int        `json:"position"`
	Permissions  string     `json:"permissions"`
	Managed      bool       `json:"managed"`
	Mentionable  bool       `json:"mentionable"`
	Flags        int        `json:"flags"`
}

// roleColors is a role's colors; secondary and tertiary are null without
// the ENHANCED_ROLE_COLORS guild feature.
type roleColors struct {
	Primary   int  `json:"primary_color"`
	Secondary *int `json:"secondary_color"`
	Tertiary  *int `json:"tertiary_color"`
}

// channelJSON is a guild text channel (type 0).
type channelJSON struct {
	ID                   string     `json:"id"`
	Type                 int        `json:"type"`
	GuildID              string     `json:"guild_id"`
	Name                 string     `json:"name"`
	Position             int        `json:"position"`
	PermissionOverwrites []struct{} `json:"permission_overwrites"`
	Topic                *string    `json:"topic"`
	NSFW                 bool       `json:"nsfw"`
	LastMessageID        *string    `json:"last_message_id"`
	LastPinTimestamp     *string    `json:"last_pin_timestamp"`
	RateLimitPerUser     int        `json:"rate_limit_per_user"`
	ParentID             *string    `json:"parent_id"`
	Flags                int        `json:"flags"`
}

// threadJSON is a public thread (type 11) the bot has not joined, so
// without member.
type threadJSON struct {
	ID               string             `json:"id"`
	Type             int                `json:"type"`
	GuildID          string             `json:"guild_id"`
	ParentID         string             `json:"parent_id"`
	OwnerID          string             `json:"owner_id"`
	Name             string             `json:"name"`
	LastMessageID    *string            `json:"last_message_id"`
	RateLimitPerUser int                `json:"rate_limit_per_user"`
	Flags            int                `json:"flags"`
	MessageCount     int                `json:"message_count"`
	MemberCount      int                `json:"member_count"`
	TotalMessageSent int                `json:"total_message_sent"`
	ThreadMetadata   threadMetadataJSON `json:"thread_metadata"`
}

type threadMetadataJSON struct {
	Archived            bool    `json:"archived"`
	AutoArchiveDuration int     `json:"auto_archive_duration"`
	ArchiveTimestamp    string  `json:"archive_timestamp"`
	Locked              bool    `json:"locked"`
	Invitable           bool    `json:"invitable"`
	CreateTimestamp     *string `json:"create_timestamp"`
}

// emojiJSON is a custom guild emoji; user is left out (it needs the
// CREATE/MANAGE_GUILD_EXPRESSIONS permission).
type emojiJSON struct {
	ID            string   `json:"id"`
	Name          string   `json:"name"`
	Roles         []string `json:"roles"`
	RequireColons bool     `json:"require_colons"`
	Managed       bool     `json:"managed"`
	Animated      bool     `json:"animated"`
	Available     bool     `json:"available"`
}

// stickerJSON is a guild sticker (type 2, PNG).
type stickerJSON struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	Tags        string  `json:"tags"`
	Type        int     `json:"type"`
	FormatType  int     `json:"format_type"`
	Available   bool    `json:"available"`
	GuildID     string  `json:"guild_id"`
}

type memberJSON struct {
	User                       userJSON `json:"user"`
	Nick                       *string  `json:"nick"`
	Avatar                     *string  `json:"avatar"`
	Banner                     *string  `json:"banner"`
	Roles                      []string `json:"roles"`
	JoinedAt                   string   `json:"joined_at"`
	PremiumSince               *string  `json:"premium_since"`
	Deaf                       bool     `json:"deaf"`
	Mute                       bool     `json:"mute"`
	Flags                      int      `json:"flags"`
	Pending                    bool     `json:"pending"`
	CommunicationDisabledUntil *string  `json:"communication_disabled_until"`
	Permissions                string   `json:"permissions,omitempty"` // in interactions only
}

// everyonePermissions is Discord's default for @everyone.
const everyonePermissions = "1071698660929"

// joinedAt is every member's joined_at: when the server started.
func (s *Server) joinedAt() string { return s.joined }

// channelObject is text channel j of guild k.
func (s *Server) channelObject(k, j int) channelJSON {
	return channelJSON{ID: strconv.FormatUint(channelID(k, j), 10), GuildID: strconv.FormatUint(guildID(k), 10),
		Name: "channel-" + strconv.Itoa(j), Position: j, PermissionOverwrites: []struct{}{}}
}

// guildJSON is the guild object of GUILD_CREATE, with its extra fields.
type guildJSON struct {
	ID                          string        `json:"id"`
	Name                        string        `json:"name"`
	Icon                        *string       `json:"icon"`
	Splash                      *string       `json:"splash"`
	DiscoverySplash             *string       `json:"discovery_splash"`
	Banner                      *string       `json:"banner"`
	Description                 *string       `json:"description"`
	OwnerID                     string        `json:"owner_id"`
	ApplicationID               *string       `json:"application_id"`
	AFKChannelID                *string       `json:"afk_channel_id"`
	AFKTimeout                  int           `json:"afk_timeout"`
	WidgetEnabled               bool          `json:"widget_enabled"`
	WidgetChannelID             *string       `json:"widget_channel_id"`
	VerificationLevel           int           `json:"verification_level"`
	DefaultMessageNotifications int           `json:"default_message_notifications"`
	ExplicitContentFilter       int           `json:"explicit_content_filter"`
	MFALevel                    int           `json:"mfa_level"`
	NSFWLevel                   int           `json:"nsfw_level"`
	PremiumTier                 int           `json:"premium_tier"`
	PremiumSubscriptionCount    int           `json:"premium_subscription_count"`
	PremiumProgressBarEnabled   bool          `json:"premium_progress_bar_enabled"`
	PreferredLocale             string        `json:"preferred_locale"`
	SystemChannelID             *string       `json:"system_channel_id"`
	SystemChannelFlags          int           `json:"system_channel_flags"`
	RulesChannelID              *string       `json:"rules_channel_id"`
	PublicUpdatesChannelID      *string       `json:"public_updates_channel_id"`
	SafetyAlertsChannelID       *string       `json:"safety_alerts_channel_id"`
	VanityURLCode               *string       `json:"vanity_url_code"`
	IncidentsData               *struct{}     `json:"incidents_data"`
	MaxPresences                *int          `json:"max_presences"`
	MaxMembers                  int           `json:"max_members"`
	MaxVideoChannelUsers        int           `json:"max_video_channel_users"`
	MaxStageVideoChannelUsers   int           `json:"max_stage_video_channel_users"`
	Features                    []string      `json:"features"`
	Roles                       []roleJSON    `json:"roles"`
	Emojis                      []emojiJSON   `json:"emojis"`
	Stickers                    []stickerJSON `json:"stickers"`

	JoinedAt        string        `json:"joined_at"`
	Large           bool          `json:"large"`
	Unavailable     bool          `json:"unavailable"`
	MemberCount     int           `json:"member_count"`
	VoiceStates     []struct{}    `json:"voice_states"`
	Members         []memberJSON  `json:"members"`
	Channels        []channelJSON `json:"channels"`
	Threads         []threadJSON  `json:"threads"`
	Presences       []struct{}    `json:"presences"`
	StageInstances  []struct{}    `json:"stage_instances"`
	ScheduledEvents []struct{}    `json:"guild_scheduled_events"`
	Soundboard      []struct{}    `json:"soundboard_sounds"`
	Lazy            bool          `json:"lazy"`
}

// guildCreate is GUILD_CREATE's d for guild k: ChannelsPerGuild text
// channels, RolesPerGuild roles (the first is @everyone), MembersPerGuild
// members (the first is the bot), ThreadsPerGuild threads in the first
// channel, EmojisPerGuild emojis and StickersPerGuild stickers. Timestamps
// are RFC 3339.
func (s *Server) guildCreate(k, largeThreshold int) []byte {
	o := s.opts
	gid := strconv.FormatUint(guildID(k), 10)
	joined := s.joinedAt()
	roles := make([]roleJSON, o.RolesPerGuild)
	for j := range roles {
		roles[j] = roleJSON{ID: strconv.FormatUint(roleID(k, j, o.ChannelsPerGuild), 10),
			Name: "role-" + strconv.Itoa(j), Position: j, Permissions: "0"}
	}
	roles[0].Name, roles[0].Permissions = "@everyone", everyonePermissions
	channels := make([]channelJSON, o.ChannelsPerGuild)
	for j := range channels {
		channels[j] = s.channelObject(k, j)
	}
	members := make([]memberJSON, o.MembersPerGuild)
	for j := range members {
		u := genUser(j)
		if j == 0 {
			u = s.botUser()
		}
		members[j] = memberJSON{User: u, Roles: []string{}, JoinedAt: joined}
	}
	n := 0 // index among a guild's threads, emojis and stickers
	extra := func() string {
		n++
		return strconv.FormatUint(extraID(k, n-1, o.ChannelsPerGuild, o.RolesPerGuild), 10)
	}
	owner := strconv.FormatUint(userID(0), 10)
	threads := make([]threadJSON, o.ThreadsPerGuild)
	for j := range threads {
		threads[j] = threadJSON{ID: extra(), Type: 11, GuildID: gid, ParentID: channels[0].ID, OwnerID: owner,
			Name: "thread-" + strconv.Itoa(j), ThreadMetadata: threadMetadataJSON{
				AutoArchiveDuration: 1440, ArchiveTimestamp: joined, Invitable: true, CreateTimestamp: &joined}}
	}
	emojis := make([]emojiJSON, o.EmojisPerGuild)
	for j := range emojis {
		emojis[j] = emojiJSON{ID: extra(), Name: "emoji_" + strconv.Itoa(j), Roles: []string{},
			RequireColons: true, Available: true}
	}
	stickers := make([]stickerJSON, o.StickersPerGuild)
	for j := range stickers {
		stickers[j] = stickerJSON{ID: extra(), Name: "sticker-" + strconv.Itoa(j), Tags: "fake",
			Type: 2, FormatType: 1, Available: true, GuildID: gid}
	}
	system := channels[0].ID
	b, _ := json.Marshal(guildJSON{
		ID: gid, Name: "guild-" + strconv.Itoa(k), OwnerID: owner, AFKTimeout: 300, PreferredLocale: "en-US",
		SystemChannelID: &system, Features: []string{}, Roles: roles, Emojis: emojis, Stickers: stickers,
		MaxMembers: 500000, MaxVideoChannelUsers: 25, MaxStageVideoChannelUsers: 50,
		JoinedAt: joined, Large: o.MembersPerGuild > largeThreshold, MemberCount: o.MembersPerGuild,
		VoiceStates: []struct{}{}, Members: members, Channels: channels, Threads: threads,
		Presences: []struct{}{}, StageInstances: []struct{}{}, ScheduledEvents: []struct{}{},
		Soundboard: []struct{}{}, Lazy: true,
	})
	return b
}
