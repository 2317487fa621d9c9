package discordtest

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Payloads of READY and MESSAGE_CREATE, the user object, and the steady
// MESSAGE_CREATE stream of Options.EventRate. GUILD_CREATE is in guild.go.

// loadTick is how often the generator tops up every live session's stream;
// maxBacklog bounds the frames it leaves queued for one slow client (events
// beyond it are not generated).
const (
	loadTick   = 10 * time.Millisecond
	maxBacklog = 4096
)

// userJSON is a user object: the fields Discord always sends, and bot for
// bots.
type userJSON struct {
	ID            string  `json:"id"`
	Username      string  `json:"username"`
	Discriminator string  `json:"discriminator"`
	GlobalName    *string `json:"global_name"`
	Avatar        *string `json:"avatar"`
	Bot           bool    `json:"bot,omitempty"`
	PublicFlags   int     `json:"public_flags"`
}

func (s *Server) botUser() userJSON {
	return userJSON{ID: s.opts.ApplicationID, Username: "discordtest", Discriminator: "0", Bot: true}
}

// selfUserJSON is the bot's own user, as READY and GET users/@me show it.
type selfUserJSON struct {
	userJSON
	Verified   bool    `json:"verified"`
	MFAEnabled bool    `json:"mfa_enabled"`
	Flags      int     `json:"flags"`
	Email      *string `json:"email"`
}

func (s *Server) selfUser() selfUserJSON {
	return selfUserJSON{userJSON: s.botUser(), Verified: true}
}

func genUser(j int) userJSON {
	name := "user-" + strconv.Itoa(j)
	return userJSON{ID: strconv.FormatUint(userID(j), 10), Username: name, Discriminator: "0", GlobalName: &name}
}

// applicationFlags are the GATEWAY_*_LIMITED flags matching the privileged
// intents the application may use.
func (s *Server) applicationFlags() int {
	f := 0
	if s.opts.PrivilegedIntents&(1<<8) != 0 {
		f |= 1 << 13
	}
	if s.opts.PrivilegedIntents&(1<<1) != 0 {
		f |= 1 << 15
	}
	if s.opts.PrivilegedIntents&(1<<15) != 0 {
		f |= 1 << 19
	}
	return f
}

// readyPayload is READY's d for gateway version v: the user, the shard's
// guilds as unavailable, a session id, resume_gateway_url, shard and
// application.
func (s *Server) readyPayload(ss *session, v int) []byte {
	type unavailable struct {
		ID          string `json:"id"`
		Unavailable bool   `json:"unavailable"`
	}
	type application struct {
		ID    string `json:"id"`
		Flags int    `json:"flags"`
	}
	ks := guildsOf(ss.guilds, ss.shard, ss.count)
	guilds := make([]unavailable, len(ks))
	for i, k := range ks {
		guilds[i] = unavailable{ID: strconv.FormatUint(guildID(k), 10), Unavailable: true}
	}
	b, _ := json.Marshal(struct {
		V                int           `json:"v"`
		User             selfUserJSON  `json:"user"`
		Guilds           []unavailable `json:"guilds"`
		SessionID        string        `json:"session_id"`
		SessionType      string        `json:"session_type"`
		ResumeGatewayURL string        `json:"resume_gateway_url"`
		Shard            [2]int        `json:"shard"`
		Application      application   `json:"application"`
		PrivateChannels  []struct{}    `json:"private_channels"`
		Relationships    []struct{}    `json:"relationships"`
		Presences        []struct{}    `json:"presences"`
		GuildJoinReqs    []struct{}    `json:"guild_join_requests"`
		RTCRegions       []string      `json:"geo_ordered_rtc_regions"`
		UserSettings     struct{}      `json:"user_settings"`
		Trace            []string      `json:"_trace"`
	}{
		V: v, User: s.selfUser(), Guilds: guilds, SessionID: ss.id, SessionType: "normal",
		ResumeGatewayURL: s.ResumeGatewayURL(), Shard: [2]int{ss.shard, ss.count},
		Application:     application{ID: s.opts.ApplicationID, Flags: s.applicationFlags()},
		PrivateChannels: []struct{}{}, Relationships: []struct{}{}, Presences: []struct{}{},
		GuildJoinReqs: []struct{}{}, RTCRegions: []string{"local"}, Trace: []string{"discordtest"},
	})
	return b
}

// messageCreate appends MESSAGE_CREATE's d: a message by a generated member
// in a channel of guild k. It is built by hand: it is the hot path of
// throughput benchmarks.
func (s *Server) messageCreate(b []byte, id string, k, n int, ts string) []byte {
	o := s.opts
	gid := guildID(k)
	ch := channelID(k, n%o.ChannelsPerGuild)
	author := max(1, n%max(1, o.MembersPerGuild))
	b = append(b, `{"type":0,"tts":false,"timestamp":"`...)
	b = append(b, ts...)
	b = append(b, `","pinned":false,"mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":[],"joined_at":"`...)
	b = append(b, s.joinedAt()...)
	b = append(b, `","deaf":false,"mute":false,"flags":0,"pending":false},"id":"`...)
	b = append(b, id...)
	b = append(b, `","flags":0,"embeds":[],"edited_timestamp":null,"content":"load message `...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `","components":[],"channel_id":"`...)
	b = strconv.AppendUint(b, ch, 10)
	b = append(b, `","author":{"id":"`...)
	b = strconv.AppendUint(b, userID(author), 10)
	b = append(b, `","username":"user-`...)
	b = strconv.AppendInt(b, int64(author), 10)
	b = append(b, `","discriminator":"0","global_name":null,"avatar":null,"public_flags":0},"attachments":[],"channel_type":0,"guild_id":"`...)
	b = strconv.AppendUint(b, gid, 10)
	b = append(b, `"}`...)
	return b
}

// SetEventRate sets the MESSAGE_CREATE dispatches per second sent to every
// live session (0 stops them). Negative, NaN and infinite rates are ignored.
func (s *Server) SetEventRate(perShardPerSecond float64) {
	if perShardPerSecond < 0 || math.IsNaN(perShardPerSecond) || math.IsInf(perShardPerSecond, 0) {
		s.log.Warn("discordtest: ignoring invalid event rate", "rate", perShardPerSecond)
		return
	}
	s.mu.Lock()
	s.eventRate = perShardPerSecond
	s.mu.Unlock()
	select {
	case s.loadWake <- struct{}{}:
	default:
	}
}

// loadSessions lists the sessions the load goes to: those on live
// connections, and those detached (still resumable) for less than
// detachedLoad, whose events a RESUME replays. It returns the guild count
// too, read under the same lock: AddGuilds has dispatched the GUILD_CREATE
// of every guild it counts to these sessions.
func (s *Server) loadSessions(now time.Time) ([]*session, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	guilds := s.guildTotal()
	out := make([]*session, 0, len(s.conns))
	for c := range s.conns {
		if c.live && c.sess != nil {
			out = append(out, c.sess)
		}
	}
	for _, ss := range s.sessions {
		ss.mu.Lock()
		if ss.conn == nil && !ss.ended && !ss.detached.IsZero() && now.Sub(ss.detached) < detachedLoad {
			out = append(out, ss)
		}
		ss.mu.Unlock()
	}
	return out, guilds
}

// runLoad is the event generator: every loadTick it gives each live session
// (and each recently detached one, see loadSessions) the MESSAGE_CREATEs it
// is owed at the current rate, spread over the guilds of its shard.
func (s *Server) runLoad() {
	defer s.wg.Done()
	var (
		ticker *time.Ticker
		tick   <-chan time.Time
		last   time.Time
		buf    []byte
	)
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		s.mu.Lock()
		rate := s.eventRate
		s.mu.Unlock()
		switch {
		case rate > 0 && ticker == nil:
			ticker = time.NewTicker(loadTick)
			tick, last = ticker.C, time.Now()
		case rate == 0 && ticker != nil:
			ticker.Stop()
			ticker, tick = nil, nil
		}
		var now time.Time
		select {
		case <-s.done:
			return
		case <-s.loadWake:
			continue
		case now = <-tick:
		}
		dt := now.Sub(last).Seconds()
		last = now
		ts := now.UTC().Format(time.RFC3339Nano)
		sessions, guilds := s.loadSessions(now)
		for _, ss := range sessions {
			ss.owed += rate * dt
			n := int(ss.owed)
			ss.owed -= float64(n)
			if n == 0 {
				continue
			}
			if room := maxBacklog - ss.backlog(); n > room {
				n = max(room, 0) // the client is behind: do not pile up
			}
			first, ng := shardGuilds(guilds, ss.shard, ss.count)
			if ng == 0 {
				continue
			}
			for range n {
				ss.cursor++
				k := first + (ss.cursor%ng)*ss.count
				buf = s.messageCreate(buf[:0], s.ids.next(), k, ss.cursor, ts)
				if !ss.dispatch("MESSAGE_CREATE", buf) {
					break
				}
			}
		}
	}
}
