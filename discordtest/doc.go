// Package discordtest is a fake Discord — REST and gateway — on 127.0.0.1,
// faithful enough that real discordgo v0.29.0 clients cannot tell it from
// Discord on the paths shardvisor uses, and strict where Discord is strict:
// it enforces Discord's gateway rules, records what clients did, and
// injects faults.
//
// # Use
//
//	srv, err := discordtest.NewServer(discordtest.Options{Guilds: 100, Shards: 4})
//	...
//	defer srv.Close()
//	s, _ := discordgo.New("Bot " + srv.Token())
//	s.Client = srv.Client()               // REST for https://discord.com goes to the fake
//	s.Dialer = &websocket.Dialer{}        // not websocket.DefaultDialer's shared fields
//	s.ShardID, s.ShardCount = 1, 4
//	err = s.Open()                        // GET gateway answers the fake's ws:// URL
//	rec, err := srv.WaitFor(ctx, func(r discordtest.Record) bool { return r.Shard(1, 4).Live == 1 })
//
// A separate process gets URL() as its API base (shardvisor -api-url): the
// fake serves /api/v9 and /api/v10, and GET gateway points at its gateway.
//
// # REST
//
// GET gateway; GET gateway/bot (url, shards = RecommendedShards,
// session_start_limit {total, remaining, reset_after ms, max_concurrency});
// GET users/@me; GET applications/@me (and oauth2/applications/@me);
// application commands, global and per guild (GET, PUT bulk
// overwrite, POST, DELETE; ids, application_id and version filled in, an id
// kept across overwrites for the same name and type); POST
// channels/{id}/messages; POST interactions/{id}/{token}/callback (204);
// webhook follow-ups POST webhooks/{app}/{token} and GET/PATCH/DELETE
// webhooks/{app}/{token}/messages/{id or @original}.
// "Authorization: Bot <token>" is required (401 {"message": "401:
// Unauthorized", "code": 0}), except on GET gateway and the
// interaction-token routes, which refuse a wrong one. Unknown routes get
// 404 and wrong methods 405, with Discord's JSON body. FailREST fails the
// next n requests of any route.
//
// # REST rate limits
//
// Discord's three, as documented
// (https://discord.com/developers/docs/topics/rate-limits):
//
//   - Per-route buckets: each route has a limit per window (RouteLimit;
//     DefaultRouteLimits: POST channels/{id}/messages 5 per 5 s, the rest 50
//     per second), routes may share a bucket, and a bucket counts apart per
//     major parameter (channel, guild, webhook or interaction id and token).
//     Every answer past authorization carries X-RateLimit-Limit, -Remaining, -Reset, -Reset-After
//     (seconds, three decimals, rounded up) and -Bucket (a stable hash of the
//     bucket's name). Past the limit: 429 with those, Retry-After and
//     X-RateLimit-Scope: user (shared for RouteLimit.Shared), body {"message",
//     "retry_after" (float seconds), "global": false}.
//   - The global limit: RESTRateLimit requests per second per bot token;
//     interaction callbacks and webhook-token routes are outside it. Past it:
//     429 with Retry-After, X-RateLimit-Global: true, X-RateLimit-Scope:
//     global, body "global": true.
//   - Invalid requests: 401, 403 and 429 (not those of scope shared) per
//     client IP in a sliding InvalidRequestWindow; past InvalidRequestLimit
//     the IP gets 403 "error code: 1015" (Cloudflare's ban) on all of REST
//     for BanPeriod.
//
// Server.Bucket reads a bucket's state, Server.InvalidRequests an IP's
// count; the record keeps every 429 (route, bucket, major, scope), the
// invalid request count and the bans.
//
// # Gateway
//
// HELLO (integer heartbeat_interval) first, then IDENTIFY → READY (user,
// guilds unavailable, session_id, resume_gateway_url, shard, application;
// the resume URL is the gateway at ResumePath, and ConnRecord.Path tells
// which one a connection dialled) and one GUILD_CREATE per guild routed to
// the shard by
// (guild_id >> 22) % shard_count; heartbeat → ACK; RESUME → the missed
// dispatches with their original sequence numbers, then RESUMED; RESUME of
// an unknown or ended session (or one refused by RefuseResumes) → op 9
// d:false with the socket left open for an IDENTIFY on it (discordgo sends
// one at once). A session no connection carries still gets the event
// stream for a minute, replayed on RESUME. Transport compression:
// with compress=zlib-stream in the URL every message of the connection,
// HELLO included, is a binary frame of one zlib stream kept for the
// connection, each ending in a sync flush (00 00 ff ff); other compress
// values (zstd-stream too) are refused with HTTP 400, Discord documenting no
// answer. Payload compression: without compress in the URL, with
// Options.Compress and IDENTIFY compress:true, frames from READY on are
// binary, one complete zlib stream each (discordgo's mode). Sessions get
// INTERACTION_CREATE from Interact and MESSAGE_CREATE at the event rate:
// each session a stream of its own, EventRate per second, about the guilds
// of its shard (not shared with other sessions holding the same guilds).
//
// Rules enforced, in the order checked for an IDENTIFY: 4005 second
// IDENTIFY on an identified socket (RESUME too); 4004 wrong token (with or
// without "Bot "); 4010 shard id outside [0, count) or, when
// max_concurrency > 1, a count that is not a multiple of it; 4013 intents
// missing or with undocumented bits; 4014 privileged intents not in
// Options.PrivilegedIntents; 4011 more than MaxGuildsPerShard guilds on the
// shard; op 9 d:false when the bucket (shard_id % max_concurrency) accepted
// an IDENTIFY less than IdentifyInterval ago (recorded as TooSoon; only
// accepted IDENTIFYs start the interval); then the session start budget
// (below). On any payload: 4008 past SendRateLimit payloads per 60 s; 4002
// for binary frames, undecodable JSON, a missing op, or payloads over 4096
// bytes; 4003 for anything but IDENTIFY, RESUME and heartbeats before
// identifying; 4001 unknown opcodes; 4012 a version other than 9 or 10 in
// the URL; 4009 no heartbeat for two intervals plus a second on a live
// session.
//
// A client closing with 1000 or 1001 ends its session; other codes and
// drops leave it resumable. Server closes with 4003-4005 or 4007-4014 end
// it; others (4000-4002, a drop) leave it resumable. A session keeps its
// last 1024 dispatches (4 MiB at most) for replay; a RESUME from further
// back gets op 9 d:false. Resumable sessions do not expire.
//
// Session starts: each accepted IDENTIFY spends one (RESUME and refused
// IDENTIFYs do not); the window of SessionStartReset starts at the first
// start and refills the budget when it runs out. GET gateway/bot answers
// for the window as of the request: reset_after is the time left in the
// running window (the whole of SessionStartReset when none runs), and
// remaining counts a window that ran out as refilled. Discord's answer to an
// overrun is to reset the bot's token and end its sessions, and no public
// source gives the wire form, so the fake does the observable equivalent:
// the IDENTIFY that finds the budget spent, and every open connection, is
// closed with 4004 (authentication failed), the token stops working on the
// gateway and on REST (401) for the rest of the server's life, and
// Record.TokenRevoked is set.
//
// # Resharding
//
// What a live reshard meets on Discord. SetRecommendedShards changes GET
// gateway/bot's shards at run time (Options().Shards and RecommendedShards
// follow). AddGuilds adds guilds (the bot joins them) with the next ids of
// the id scheme, so earlier ids never move: every session not ended whose
// shard now holds more than MaxGuildsPerShard ends — closed with 4011
// "sharding required" (not resumable), or, detached, no longer resumable —
// and the others get a GUILD_CREATE per new guild of their shard. IDENTIFYs
// of any valid count are accepted at any time, so sessions of two counts
// (the old shard set and the new one identifying beside it, as twilight
// does) may be live at once; every guild event goes to the guild's shard
// of each count, (guild_id >> 22) % count: GUILD_CREATE of new guilds and
// Interact's INTERACTION_CREATE (InteractionRecord.Sessions lists every
// session it went to), and the load stays within each session's shard.
// GuildIDsOf(shard, count) lists a shard's guilds for any count;
// LiveSessionsOf(guild) names the sessions (id, shard, count) live for a
// guild now. Coverage over time: the record keeps, per (shard, count), the
// intervals it was live (ShardLive.Intervals, stamped under one lock with
// strictly increasing times), and the guild count over time
// (Record.GuildGrowth); Record.Uncovered(from, to) and Server.Uncovered
// return every interval in which some guild had no live session of any
// count ([]Gap: guild id, from, to), exactly, and nothing when each shard
// of the new count went live before the old shards holding its guilds
// went away. A detached session waiting for RESUME does not cover its
// guilds.
//
// # Payloads
//
// Every object and event the fake sends — HELLO, READY, GUILD_CREATE and
// its guild, roles, channels, threads, emojis, stickers and members,
// MESSAGE_CREATE, INTERACTION_CREATE, the user, the application, messages
// and GET gateway/bot — carries every field Discord's documentation marks
// as always present, with its types and nullability, checked by
// TestPayloadsHaveDocumentedFields against a table taken from the
// documentation. Roles carry colors; INTERACTION_CREATE carries the
// partial guild and channel, attachment_size_limit,
// authorizing_integration_owners (the guild install only: {"0": guild id},
// "0" in a DM), entitlements, app_permissions, locale, guild_locale and
// context; data.guild_id is set only for a command registered in the
// guild. READY's v is the URL's version. TestForeignClient drives a
// gateway client written from Discord's documentation alone (zlib-stream,
// 4 shards, heartbeats, an interaction answered by callback) against the
// fake. ThreadsPerGuild, EmojisPerGuild
// and StickersPerGuild add those objects to GUILD_CREATE.
//
// Deliberately left out: encoding=etf and compress=zstd-stream; optional
// fields for state the fake does not model — role tags (no managed bot
// role), emoji user, a thread's member and applied_tags (the bot joins no
// thread, there are no forums), guild member avatar_decoration_data and
// collectibles, user banner, accent_color, avatar_decoration_data,
// collectibles and primary_guild, message reactions, nonce, references,
// stickers and polls, interaction data.resolved (options carry values
// only), application install_params, custom_install_url, guild, cover image
// and event webhooks, and the guild fields that only GET users/@me/guilds,
// invites or templates return (owner, permissions, approximate counts,
// welcome_screen, icon_hash, region); presences, voice states, stage
// instances, scheduled events and soundboard sounds are always empty lists;
// fields Discord sends without documenting them (clan, hub_type, ...) are
// left out, except the few discordgo reads (lazy, session_type, _trace).
//
// # Faults
//
// Disconnect (close code or drop), Zombie (no heartbeat ACKs for a shard,
// until turned off), Reconnect (op 7), InvalidSession (op 9 d:true/false),
// SendMalformed (broken JSON, unknown op, a ~1 MiB dispatch, a binary frame
// that is not zlib), SetHelloDelay, FailREST (429 or 5xx), SetEventRate,
// ReconnectInsteadOfReady: op 7 in place of READY on a shard's next
// IDENTIFY, which deadlocks discordgo v0.29.0's Open (upstream issue 513),
// and InvalidSessionDuringGuilds: op 9 d:false after the first n
// GUILD_CREATEs of a shard's next session, in the middle of its startup.
//
// # Record
//
// Server.Record returns a deep copy of: every IDENTIFY (time read, bucket,
// gap since the bucket's previous IDENTIFY, TooSoon, outcome), every
// RESUME, every session (start, end, close code and closer, dispatches
// delivered, resumes), every connection, live sessions per (shard, count)
// now and at most at one moment (MaxLive 2 means a bot would answer twice)
// and the intervals each was live, the guild count over time,
// interactions with every reply, session starts, REST calls by route
// and status, every 429 (RateLimited), invalid requests and IP bans.
// WaitFor re-evaluates a condition at every change.
//
// # Control API
//
// Served under ControlPrefix ("/_fake") on the fake's listener, and by
// ControlHandler at its root. Requests and answers are JSON; unknown fields
// are refused. Errors are {"error": "..."} with 400 (bad request), 404, 405,
// 409 (interact: no session of the shard) or 504 (interact: no reply in
// time). "shard": -1 means every shard where noted.
//
//	GET  /_fake/record                     → the Record
//	GET  /_fake/guilds                     → {"guild_ids": [...]}
//	POST /_fake/add-guilds                 {"n": 3}                     → {"guild_ids": [the new ones], "guilds": total}
//	POST /_fake/recommended-shards         {"shards": 16}               (GET gateway/bot's shards)
//	GET  /_fake/live-sessions?guild_id=ID  → {"sessions": [{"id","shard","shard_count"}]} (404: unknown guild)
//	GET  /_fake/uncovered?from=RFC3339&to=RFC3339 → {"gaps": [{"guild_id","from","to"}]} (to optional: now)
//	GET  /_fake/bucket?route=POST%20channels/{channel}/messages&major=ID → the BucketState
//	POST /_fake/interact                   {"guild_id": "", "channel_id": "", "user_id": "", "command": "ping",
//	                                        "options": [{"name": "n", "value": 1}], "timeout": "10s"}
//	                                       → the Reply {"via","type","content","at","latency_ns","status"}
//	POST /_fake/disconnect                 {"shard": 0, "code": 4000}   (code 0: drop TCP; shard -1: all) → {"connections": n}
//	POST /_fake/zombie                     {"shard": 0, "on": true}
//	POST /_fake/reconnect                  {"shard": 0}                 (op 7; shard -1: all) → {"connections": n}
//	POST /_fake/reconnect-instead-of-ready {"shard": 0}
//	POST /_fake/invalid-session            {"shard": 0, "resumable": false} (op 9; shard -1: all) → {"connections": n}
//	POST /_fake/invalid-session-during-guilds {"shard": 0, "after": 3} (next session: op 9 after 3 GUILD_CREATEs)
//	POST /_fake/malformed                  {"shard": 0, "kind": "json"} (json, unknown_op, oversized, binary) → {"connections": n}
//	POST /_fake/hello-delay                {"delay": "2s"}
//	POST /_fake/fail-rest                  {"status": 429, "n": 3}      (status 400-599; n 0 cancels)
//	POST /_fake/event-rate                 {"per_shard_per_second": 50}
package discordtest
