package discordtest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// docSchemas are the payload structures of Discord's documentation
// (discord/discord-api-docs, developers/: resources/user, guild, channel,
// emoji, sticker, message, application; topics/permissions; events/gateway
// and gateway-events; interactions/receiving-and-responding), transcribed
// field by field for every object and event the fake sends.
//
// A field name ending in "?" is optional: checked only when present. A
// type starting with "?" may be null. "[]T" is an array of T. T is a
// primitive (snowflake, string, integer, number, boolean, timestamp,
// object, any) or another schema of this table. Optional fields that
// Discord documents but the fake never sends are kept, so that their type
// is checked the day it sends them.
//
// Where a footnote of the documentation makes an optional field present
// on a path the fake serves, the path's schema (interaction_guild,
// interaction_dm, thread, application_me) requires it; each says why.
var docSchemas = map[string]map[string]string{
	"hello": {"heartbeat_interval": "integer"},
	"ready": {
		"v": "integer", "user": "user", "guilds": "[]unavailable_guild", "session_id": "string",
		"resume_gateway_url": "string", "shard?": "[]integer", "application": "ready_application",
	},
	"unavailable_guild": {"id": "snowflake", "unavailable": "boolean"},
	// READY's application: "partial application object: contains id and flags".
	"ready_application": {"id": "snowflake", "flags": "integer"},
	"user": {
		"id": "snowflake", "username": "string", "discriminator": "string", "global_name": "?string",
		"avatar": "?string", "bot?": "boolean", "system?": "boolean", "mfa_enabled?": "boolean",
		"banner?": "?string", "accent_color?": "?integer", "locale?": "string", "verified?": "boolean",
		"email?": "?string", "flags?": "integer", "premium_type?": "integer", "public_flags?": "integer",
		"avatar_decoration_data?": "?object", "collectibles?": "?object", "primary_guild?": "?object",
	},
	"guild_create": {
		// Guild Structure
		"id": "snowflake", "name": "string", "icon": "?string", "icon_hash?": "?string", "splash": "?string",
		"discovery_splash": "?string", "owner_id": "snowflake", "afk_channel_id": "?snowflake",
		"afk_timeout": "integer", "widget_enabled?": "boolean", "widget_channel_id?": "?snowflake",
		"verification_level": "integer", "default_message_notifications": "integer",
		"explicit_content_filter": "integer", "roles": "[]role", "emojis": "[]emoji", "features": "[]string",
		"mfa_level": "integer", "application_id": "?snowflake", "system_channel_id": "?snowflake",
		"system_channel_flags": "integer", "rules_channel_id": "?snowflake", "max_presences?": "?integer",
		"max_members?": "integer", "vanity_url_code": "?string", "description": "?string", "banner": "?string",
		"premium_tier": "integer", "premium_subscription_count?": "integer", "preferred_locale": "string",
		"public_updates_channel_id": "?snowflake", "max_video_channel_users?": "integer",
		"max_stage_video_channel_users?": "integer", "nsfw_level": "integer", "stickers?": "[]sticker",
		"premium_progress_bar_enabled": "boolean", "safety_alerts_channel_id": "?snowflake",
		"incidents_data": "?object",
		// Guild Create Extra Fields
		"joined_at": "timestamp", "large": "boolean", "unavailable?": "boolean", "member_count": "integer",
		"voice_states": "[]object", "members": "[]member", "channels": "[]channel", "threads": "[]thread",
		"presences": "[]object", "stage_instances": "[]object", "guild_scheduled_events": "[]object",
		"soundboard_sounds": "[]object",
	},
	"role": {
		"id": "snowflake", "name": "string", "color": "integer", "colors": "role_colors", "hoist": "boolean",
		"icon?": "?string", "unicode_emoji?": "?string", "position": "integer", "permissions": "string",
		"managed": "boolean", "mentionable": "boolean", "tags?": "object", "flags": "integer",
	},
	"role_colors": {"primary_color": "integer", "secondary_color": "?integer", "tertiary_color": "?integer"},
	"channel": {
		"id": "snowflake", "type": "integer", "guild_id?": "snowflake", "position?": "integer",
		"permission_overwrites?": "[]object", "name?": "?string", "topic?": "?string", "nsfw?": "boolean",
		"last_message_id?": "?snowflake", "bitrate?": "integer", "user_limit?": "integer",
		"rate_limit_per_user?": "integer", "recipients?": "[]user", "icon?": "?string", "owner_id?": "snowflake",
		"application_id?": "?snowflake", "managed?": "boolean", "parent_id?": "?snowflake",
		"last_pin_timestamp?": "?timestamp", "rtc_region?": "?string", "video_quality_mode?": "integer",
		"message_count?": "integer", "member_count?": "integer", "thread_metadata?": "thread_metadata",
		"member?": "object", "default_auto_archive_duration?": "integer", "permissions?": "string",
		"flags?": "integer", "total_message_sent?": "integer", "available_tags?": "[]object",
		"applied_tags?": "[]snowflake", "default_reaction_emoji?": "?object",
		"default_thread_rate_limit_per_user?": "integer", "default_sort_order?": "?integer",
		"default_forum_layout?": "integer",
	},
	// A thread is a channel; "thread-specific fields" (owner_id, parent_id,
	// message_count, member_count, thread_metadata) are there for threads.
	"thread": withFields("channel", map[string]string{
		"guild_id": "snowflake", "parent_id": "?snowflake", "owner_id": "snowflake", "name": "?string",
		"message_count": "integer", "member_count": "integer", "thread_metadata": "thread_metadata",
	}),
	"thread_metadata": {
		"archived": "boolean", "auto_archive_duration": "integer", "archive_timestamp": "timestamp",
		"locked": "boolean", "invitable?": "boolean", "create_timestamp?": "?timestamp",
	},
	"emoji": {
		"id": "?snowflake", "name": "?string", "roles?": "[]snowflake", "user?": "user",
		"require_colons?": "boolean", "managed?": "boolean", "animated?": "boolean", "available?": "boolean",
	},
	"sticker": {
		"id": "snowflake", "pack_id?": "snowflake", "name": "string", "description": "?string",
		"tags": "string", "type": "integer", "format_type": "integer", "available?": "boolean",
		"guild_id?": "snowflake", "user?": "user", "sort_value?": "integer",
	},
	"member": {
		"user?": "user", "nick?": "?string", "avatar?": "?string", "banner?": "?string", "roles": "[]snowflake",
		"joined_at": "?timestamp", "premium_since?": "?timestamp", "deaf": "boolean", "mute": "boolean",
		"flags": "integer", "pending?": "boolean", "permissions?": "string",
		"communication_disabled_until?": "?timestamp", "avatar_decoration_data?": "?object",
		"collectibles?": "?object",
	},
	"message": {
		"id": "snowflake", "channel_id": "snowflake", "author": "user", "content": "string",
		"timestamp": "timestamp", "edited_timestamp": "?timestamp", "tts": "boolean",
		"mention_everyone": "boolean", "mentions": "[]user", "mention_roles": "[]snowflake",
		"mention_channels?": "[]object", "attachments": "[]object", "embeds": "[]object",
		"reactions?": "[]object", "nonce?": "any", "pinned": "boolean", "webhook_id?": "snowflake",
		"type": "integer", "activity?": "object", "application?": "object", "application_id?": "snowflake",
		"flags?": "integer", "message_reference?": "object", "referenced_message?": "?object",
		"interaction_metadata?": "object", "thread?": "channel", "components?": "[]object",
		"sticker_items?": "[]object", "stickers?": "[]sticker", "position?": "integer",
	},
	// Message Create Extra Fields
	"message_create": withFields("message", map[string]string{
		"guild_id?": "snowflake", "member?": "member", "channel_type?": "integer",
	}),
	"interaction": {
		"id": "snowflake", "application_id": "snowflake", "type": "integer", "data?": "command_data",
		"guild?": "interaction_guild_object", "guild_id?": "snowflake", "channel?": "channel",
		"channel_id?": "snowflake", "member?": "member", "user?": "user", "token": "string", "version": "integer",
		"message?": "message", "app_permissions": "string", "locale?": "string", "guild_locale?": "string",
		"entitlements": "[]object", "authorizing_integration_owners": "integration_owners",
		"context?": "integer", "attachment_size_limit": "integer",
	},
	// "data: always present on application command ... interaction types";
	// "member is sent when the interaction is invoked in a guild, and user
	// is sent when invoked in a DM"; locale "is available on all
	// interaction types except PING". Discord sends the partial guild and
	// channel, guild_locale and context with every guild command.
	"interaction_guild": withFields("interaction", map[string]string{
		"data": "command_data", "guild": "interaction_guild_object", "guild_id": "snowflake",
		"channel": "channel", "channel_id": "snowflake", "member": "member", "locale": "string",
		"guild_locale": "string", "context": "integer",
	}),
	"interaction_dm": withFields("interaction", map[string]string{
		"data": "command_data", "channel": "channel", "channel_id": "snowflake", "user": "user",
		"locale": "string", "context": "integer",
	}),
	// The partial guild of an interaction: id, locale and features.
	"interaction_guild_object": {"id": "snowflake", "locale": "string", "features": "[]string"},
	"command_data": {
		"id": "snowflake", "name": "string", "type": "integer", "resolved?": "object",
		"options?": "[]command_option", "guild_id?": "snowflake", "target_id?": "snowflake",
	},
	"command_option": {
		"name": "string", "type": "integer", "value?": "any", "options?": "[]command_option", "focused?": "boolean",
	},
	"application": {
		"id": "snowflake", "name": "string", "icon": "?string", "description": "string",
		"rpc_origins?": "[]string", "bot_public": "boolean", "bot_require_code_grant": "boolean",
		"bot?": "user", "terms_of_service_url?": "string", "privacy_policy_url?": "string", "owner?": "user",
		"verify_key": "string", "team": "?object", "guild_id?": "snowflake", "guild?": "object",
		"primary_sku_id?": "snowflake", "slug?": "string", "cover_image?": "string", "flags?": "integer",
		"approximate_guild_count?": "integer", "approximate_user_install_count?": "integer",
		"redirect_uris?": "[]string", "interactions_endpoint_url?": "?string",
		"role_connections_verification_url?": "?string", "tags?": "[]string", "install_params?": "object",
		"integration_types_config?": "object", "custom_install_url?": "string",
	},
	// GET applications/@me returns the bot's own application: Discord
	// always includes its bot user, owner and flags (disnake needs owner).
	"application_me": withFields("application", map[string]string{
		"bot": "user", "owner": "user", "flags": "integer",
	}),
	"gateway_bot": {"url": "string", "shards": "integer", "session_start_limit": "session_start_limit"},
	"session_start_limit": {
		"total": "integer", "remaining": "integer", "reset_after": "integer", "max_concurrency": "integer",
	},
}

// withFields is schema base with fields added or made required: extra
// with base under the key "+".
func withFields(base string, extra map[string]string) map[string]string {
	extra["+"] = base
	return extra
}

// schemaFields resolves a schema of docSchemas (with its base) into field
// -> (type, required).
func schemaFields(name string) (map[string]fieldSpec, error) {
	s, ok := docSchemas[name]
	if !ok {
		return nil, fmt.Errorf("no schema %q", name)
	}
	out := map[string]fieldSpec{}
	if base, ok := s["+"]; ok {
		var err error
		if out, err = schemaFields(base); err != nil {
			return nil, err
		}
	}
	for k, v := range s {
		if k == "+" {
			continue
		}
		name, opt := strings.CutSuffix(k, "?")
		out[name] = fieldSpec{typ: v, required: !opt}
	}
	return out, nil
}

type fieldSpec struct {
	typ      string
	required bool
}

// schemaChecker checks decoded JSON against docSchemas and notes which
// schemas it saw.
type schemaChecker struct {
	errs []string
	seen map[string]bool
}

var digits = regexp.MustCompile(`^[0-9]+$`)

func (c *schemaChecker) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, path+": "+fmt.Sprintf(format, args...))
}

// check checks v at path against type typ.
func (c *schemaChecker) check(path, typ string, v any) {
	if strings.HasPrefix(typ, "?") {
		if v == nil {
			return
		}
		typ = typ[1:]
	} else if v == nil {
		c.errorf(path, "null, want %s", typ)
		return
	}
	if elem, ok := strings.CutPrefix(typ, "[]"); ok {
		a, ok := v.([]any)
		if !ok {
			c.errorf(path, "%T, want array of %s", v, elem)
			return
		}
		for i, e := range a {
			c.check(fmt.Sprintf("%s[%d]", path, i), elem, e)
		}
		return
	}
	switch typ {
	case "any":
	case "string":
		if _, ok := v.(string); !ok {
			c.errorf(path, "%T, want string", v)
		}
	case "snowflake":
		if s, ok := v.(string); !ok || !digits.MatchString(s) {
			c.errorf(path, "%#v, want a snowflake string", v)
		}
	case "timestamp":
		if s, ok := v.(string); !ok {
			c.errorf(path, "%T, want an ISO 8601 timestamp", v)
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			c.errorf(path, "%q: %v", s, err)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != float64(int64(f)) {
			c.errorf(path, "%#v, want integer", v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			c.errorf(path, "%#v, want number", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			c.errorf(path, "%#v, want boolean", v)
		}
	case "object":
		if _, ok := v.(map[string]any); !ok {
			c.errorf(path, "%T, want object", v)
		}
	case "integration_owners":
		// "dictionary with keys of application integration types": "0"
		// (GUILD_INSTALL: a guild id, or "0" in a DM with the bot) and
		// "1" (USER_INSTALL: a user id).
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 {
			c.errorf(path, "%#v, want a non-empty object", v)
			return
		}
		for k, id := range m {
			if k != "0" && k != "1" {
				c.errorf(path, "key %q is not an integration type", k)
			}
			c.check(path+"."+k, "snowflake", id)
		}
	default:
		fields, err := schemaFields(typ)
		if err != nil {
			c.errorf(path, "%v", err)
			return
		}
		c.seen[typ] = true
		m, ok := v.(map[string]any)
		if !ok {
			c.errorf(path, "%T, want %s object", v, typ)
			return
		}
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for k := range fields {
				if !yield(k) {
					return
				}
			}
		}) {
			f := fields[name]
			fv, present := m[name]
			if !present {
				if f.required {
					c.errorf(path+"."+name, "missing (%s)", f.typ)
				}
				continue
			}
			c.check(path+"."+name, f.typ, fv)
		}
	}
}

// checkJSON decodes b and checks it as schema.
func (c *schemaChecker) checkJSON(path, schema string, b []byte) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		c.errorf(path, "decode: %v", err)
		return
	}
	c.check(path, schema, v)
}
