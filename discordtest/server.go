package discordtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/shardvisor/shardvisor/internal/apiurl"
)

// ControlPrefix is the path under which NewServer serves ControlHandler on
// its own listener: the control API lives at URL()+ControlPrefix+"/...".
const ControlPrefix = "/_fake"

// ResumePath is the path of READY's resume_gateway_url: the same gateway
// (Discord's differs by host, the fake's by path), so that a test can see
// which URL a client resumed at (ConnRecord.Path).
const ResumePath = GatewayPath + "/resume"

// GatewayPath is the path of the fake's gateway; GET gateway answers
// ws://HOST:PORT/gateway.
const GatewayPath = "/gateway"

// Defaults applied by NewServer to zero Options fields.
const (
	DefaultToken             = "discordtest-token"
	DefaultApplicationID     = "1150000000000000001"
	DefaultGuilds            = 10
	DefaultIdentifyInterval  = 5 * time.Second
	DefaultSessionStartLimit = 1000
	DefaultSessionStartReset = 24 * time.Hour
	DefaultHeartbeatInterval = 41250 * time.Millisecond
	DefaultMaxGuildsPerShard = 2500
	DefaultRESTRateLimit     = 50
	DefaultSendRateLimit     = 120
)

// Options configures a fake Discord. The zero value is usable: every zero
// field takes the default named in its comment.
type Options struct {
	Addr             string        // listen address; default "127.0.0.1:0"
	Token            string        // the bot token accepted; default DefaultToken
	ApplicationID    string        // application (and bot user) id; default DefaultApplicationID
	Guilds           int           // total guilds; default 10
	Shards           int           // recommended shard count in GET gateway/bot; default 1
	MaxConcurrency   int           // identify buckets; default 1
	IdentifyInterval time.Duration // one accepted IDENTIFY per bucket per interval; default 5 s
	// IdentifyTolerance is measurement slack for the pacing rule: an
	// IDENTIFY is refused as too soon only when it arrived more than this
	// before the interval was over. The fake timestamps a frame when its
	// read goroutine gets it, so on a loaded machine two timestamps can be
	// milliseconds closer than the frames were sent; a client that does not
	// pace at all shows gaps far below any sane tolerance. Default 0: strict.
	// The record's Gap is always the measured one.
	IdentifyTolerance time.Duration
	SessionStartLimit int           // session_start_limit.total; default 1000
	SessionStartReset time.Duration // session start window; default 24 h
	HeartbeatInterval time.Duration // sent in HELLO (rounded up to whole ms); default 41.25 s
	MaxGuildsPerShard int           // more guilds on one shard → close 4011; default 2500
	// PrivilegedIntents are the privileged intents (GUILD_MEMBERS,
	// GUILD_PRESENCES, MESSAGE_CONTENT) the application may use; asking for
	// any other privileged intent closes with 4014. Default none.
	PrivilegedIntents discordgo.Intent
	// Payload sizes of GUILD_CREATE. Zero means 1: one text channel, the
	// @everyone role and the bot's own member.
	ChannelsPerGuild, RolesPerGuild, MembersPerGuild int
	// More objects in GUILD_CREATE; zero means none: public threads in the
	// first channel, custom emojis and guild stickers.
	ThreadsPerGuild, EmojisPerGuild, StickersPerGuild int
	// EventRate is the number of MESSAGE_CREATE dispatches per second sent
	// to every live session (0 = none). SetEventRate changes it later.
	EventRate float64
	// Compress enables per-frame zlib (one complete zlib stream per binary
	// frame) for sessions whose IDENTIFY carries compress:true.
	Compress bool
	// RESTRateLimit is the global REST limit in requests per second per bot
	// token before 429; default 50 (Discord's). Interaction callbacks and
	// webhooks are exempt, as on Discord.
	RESTRateLimit int
	// RouteLimits overrides per-route rate limits, keyed by route pattern
	// ("POST channels/{channel}/messages"; DefaultRouteLimits lists every
	// route and its default). Routes left out keep their default. NewServer
	// copies the map; Options returns the complete table in force.
	RouteLimits map[string]RouteLimit
	// Invalid requests (answers 401, 403, and 429 but those of scope
	// shared) from one client IP: the one that passes InvalidRequestLimit
	// (default 10,000) within a sliding InvalidRequestWindow (default
	// 10 min) bans the IP, and every REST request from it is answered 403
	// (Cloudflare's error 1015) for BanPeriod (default 1 h).
	InvalidRequestLimit  int
	InvalidRequestWindow time.Duration
	BanPeriod            time.Duration
	// SendRateLimit is the number of payloads a client may send per 60 s on
	// one connection before close 4008; default 120 (Discord's), negative
	// means no limit.
	SendRateLimit int
	Logger        *slog.Logger // nil discards
}

// Server is a fake Discord (REST and gateway) on one listener. Its methods
// are safe for concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	ln        net.Listener
	http      *http.Server
	url       string // http://host:port
	wsURL     string // ws://host:port/gateway
	transport *http.Transport
	rt        http.RoundTripper
	client    *http.Client
	upgrader  websocket.Upgrader
	ids       idGen
	rec       *recorder
	lim       *limiter
	joined    string        // RFC 3339 time every member joined: the server's start
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // handlers, connections and the load generator
	loadWake  chan struct{}  // SetEventRate pokes the generator
	// guilds is the number of guilds (Options.Guilds, then AddGuilds) and
	// shards the recommended shard count (Options.Shards, then
	// SetRecommendedShards); both are written holding mu, so a reader
	// holding mu sees them consistent with the sessions.
	guilds atomic.Int64
	shards atomic.Int64

	mu             sync.Mutex
	closed         bool
	conns          map[*conn]struct{}
	sessions       map[string]*session
	nextConn       uint64
	bucketAccepted []time.Time // last accepted IDENTIFY per bucket
	bucketLast     []time.Time // last IDENTIFY of any outcome per bucket
	startsLeft     int
	startsReset    time.Time // zero until the first session start of a window
	revoked        bool
	zombie         map[int]bool
	reconnectReady map[int]int   // shard → IDENTIFYs to answer with op 7
	invalidGuilds  map[int][]int // shard → GUILD_CREATE counts after which sessions get op 9
	refuseResumes  int           // RESUMEs still to answer op 9 (RefuseResumes)
	helloDelay     time.Duration
	failStatus     int
	failLeft       int
	commands       map[string][]command // "" global, else guild id
	pending        map[string]*pendingInteraction
	eventRate      float64
}

// NewServer validates opts, listens and starts serving. Close releases
// everything it started.
func NewServer(opts Options) (*Server, error) {
	o, err := withDefaults(opts)
	if err != nil {
		return nil, fmt.Errorf("new server: %w", err)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("new server: listen: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:           o,
		log:            log,
		ln:             ln,
		url:            "http://" + ln.Addr().String(),
		wsURL:          "ws://" + ln.Addr().String() + GatewayPath,
		rec:            newRecorder(o.SessionStartLimit, o.Guilds, time.Now()),
		lim:            newLimiter(o.RESTRateLimit, o.RouteLimits, o.InvalidRequestLimit, o.InvalidRequestWindow, o.BanPeriod),
		joined:         time.Now().UTC().Format(time.RFC3339Nano),
		done:           make(chan struct{}),
		loadWake:       make(chan struct{}, 1),
		conns:          make(map[*conn]struct{}),
		sessions:       make(map[string]*session),
		bucketAccepted: make([]time.Time, o.MaxConcurrency),
		bucketLast:     make([]time.Time, o.MaxConcurrency),
		startsLeft:     o.SessionStartLimit,
		zombie:         make(map[int]bool),
		reconnectReady: make(map[int]int),
		invalidGuilds:  make(map[int][]int),
		commands:       make(map[string][]command),
		pending:        make(map[string]*pendingInteraction),
		eventRate:      o.EventRate,
	}
	s.guilds.Store(int64(o.Guilds))
	s.shards.Store(int64(o.Shards))
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      func(*http.Request) bool { return true },
	}
	base, err := apiurl.Parse(s.url)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("new server: %w", err)
	}
	s.transport = &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	s.rt = apiurl.Transport(base, s.transport)
	s.client = &http.Client{Transport: s.rt, Timeout: 30 * time.Second}

	mux := http.NewServeMux()
	mux.Handle(GatewayPath, http.HandlerFunc(s.serveGateway))
	mux.Handle(GatewayPath+"/", http.HandlerFunc(s.serveGateway))
	mux.Handle("/api/", s.restHandler())
	mux.Handle(ControlPrefix+"/", http.StripPrefix(ControlPrefix, s.ControlHandler()))
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, 0, "404: Not Found")
	}))
	s.http = &http.Server{
		Handler:           s.tracked(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("discordtest: serve", "err", err)
		}
	}()
	go s.runLoad()
	s.log.Info("discordtest: listening", "url", s.url)
	return s, nil
}

func withDefaults(o Options) (Options, error) {
	type check struct {
		name string
		v    int64
	}
	for _, c := range []check{
		{"guilds", int64(o.Guilds)}, {"shards", int64(o.Shards)},
		{"max concurrency", int64(o.MaxConcurrency)}, {"identify interval", int64(o.IdentifyInterval)},
		{"identify tolerance", int64(o.IdentifyTolerance)},
		{"session start limit", int64(o.SessionStartLimit)}, {"session start reset", int64(o.SessionStartReset)},
		{"heartbeat interval", int64(o.HeartbeatInterval)}, {"max guilds per shard", int64(o.MaxGuildsPerShard)},
		{"channels per guild", int64(o.ChannelsPerGuild)}, {"roles per guild", int64(o.RolesPerGuild)},
		{"members per guild", int64(o.MembersPerGuild)}, {"rest rate limit", int64(o.RESTRateLimit)},
		{"threads per guild", int64(o.ThreadsPerGuild)}, {"emojis per guild", int64(o.EmojisPerGuild)},
		{"stickers per guild", int64(o.StickersPerGuild)},
		{"invalid request limit", int64(o.InvalidRequestLimit)}, {"invalid request window", int64(o.InvalidRequestWindow)},
		{"ban period", int64(o.BanPeriod)},
	} {
		if c.v < 0 {
			return o, fmt.Errorf("%s must not be negative, got %d", c.name, c.v)
		}
	}
	if o.EventRate < 0 || math.IsNaN(o.EventRate) || math.IsInf(o.EventRate, 0) {
		return o, fmt.Errorf("event rate must be a finite number >= 0, got %v", o.EventRate)
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Token == "" {
		o.Token = DefaultToken
	}
	if strings.ContainsAny(o.Token, " \t\r\n") {
		return o, errors.New("token must not contain white space")
	}
	if o.ApplicationID == "" {
		o.ApplicationID = DefaultApplicationID
	}
	if _, err := strconv.ParseUint(o.ApplicationID, 10, 64); err != nil {
		return o, fmt.Errorf("application id %q is not a snowflake", o.ApplicationID)
	}
	setDefault(&o.Guilds, DefaultGuilds)
	setDefault(&o.Shards, 1)
	setDefault(&o.MaxConcurrency, 1)
	setDefault(&o.SessionStartLimit, DefaultSessionStartLimit)
	setDefault(&o.MaxGuildsPerShard, DefaultMaxGuildsPerShard)
	setDefault(&o.ChannelsPerGuild, 1)
	setDefault(&o.RolesPerGuild, 1)
	setDefault(&o.MembersPerGuild, 1)
	setDefault(&o.RESTRateLimit, DefaultRESTRateLimit)
	setDefault(&o.SendRateLimit, DefaultSendRateLimit)
	setDefault(&o.InvalidRequestLimit, DefaultInvalidRequestLimit)
	if o.InvalidRequestWindow == 0 {
		o.InvalidRequestWindow = DefaultInvalidRequestWindow
	}
	if o.BanPeriod == 0 {
		o.BanPeriod = DefaultBanPeriod
	}
	limits, err := routeLimits(o.RouteLimits)
	if err != nil {
		return o, err
	}
	o.RouteLimits = limits
	if o.IdentifyInterval == 0 {
		o.IdentifyInterval = DefaultIdentifyInterval
	}
	if o.IdentifyTolerance >= o.IdentifyInterval {
		return o, fmt.Errorf("discordtest: identify tolerance %v must be less than the identify interval %v", o.IdentifyTolerance, o.IdentifyInterval)
	}
	if o.SessionStartReset == 0 {
		o.SessionStartReset = DefaultSessionStartReset
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Guilds > maxGuilds {
		return o, fmt.Errorf("guilds must be at most %d, got %d", maxGuilds, o.Guilds)
	}
	if o.ChannelsPerGuild+o.RolesPerGuild+o.ThreadsPerGuild+o.EmojisPerGuild+o.StickersPerGuild > maxGuildChildren {
		return o, fmt.Errorf("channels, roles, threads, emojis and stickers per guild must be at most %d in all", maxGuildChildren)
	}
	if o.PrivilegedIntents&^privilegedIntents != 0 {
		return o, fmt.Errorf("privileged intents %d include non-privileged bits %d",
			o.PrivilegedIntents, o.PrivilegedIntents&^privilegedIntents)
	}
	return o, nil
}

func setDefault(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

// URL is the base URL of the fake ("http://127.0.0.1:PORT"): what
// `shardvisor -api-url` gets. REST is under /api/v9 and /api/v10.
func (s *Server) URL() string { return s.url }

// GatewayURL is the websocket URL GET gateway answers.
func (s *Server) GatewayURL() string { return s.wsURL }

// ResumeGatewayURL is READY's resume_gateway_url: the gateway at ResumePath.
func (s *Server) ResumeGatewayURL() string {
	return strings.TrimSuffix(s.wsURL, GatewayPath) + ResumePath
}

// Token is the bot token the fake accepts (without the "Bot " prefix).
func (s *Server) Token() string { return s.opts.Token }

// ApplicationID is the application's (and the bot user's) id.
func (s *Server) ApplicationID() string { return s.opts.ApplicationID }

// Options returns the options in force, defaults applied; RouteLimits is a
// copy with every route. Guilds and Shards are the current ones: after
// AddGuilds and SetRecommendedShards.
func (s *Server) Options() Options {
	o := s.opts
	o.RouteLimits = maps.Clone(o.RouteLimits)
	o.Guilds, o.Shards = s.guildTotal(), s.RecommendedShards()
	return o
}

// Transport returns a RoundTripper that sends requests for
// https://discord.com (what discordgo builds) to the fake. Its idle
// connections are closed by Close.
func (s *Server) Transport() http.RoundTripper { return s.rt }

// Client returns an http.Client using Transport(), for discordgo's
// Session.Client.
func (s *Server) Client() *http.Client { return s.client }

// Close stops the listener, drops every connection without a close frame,
// stops the event generator, and returns once every goroutine the server
// started has exited. Later calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		close(s.done)
		if err := s.http.Close(); err != nil {
			s.closeErr = fmt.Errorf("close server: %w", err)
		}
		for _, c := range conns {
			c.ws.Close()
		}
		s.wg.Wait()
		s.transport.CloseIdleConnections()
		s.log.Info("discordtest: closed", "url", s.url)
	})
	return s.closeErr
}

// tracked counts each request's handler in s.wg so that Close can wait for
// them; requests arriving after Close get 503.
func (s *Server) tracked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			writeError(w, http.StatusServiceUnavailable, 0, "503: Service Unavailable")
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// Record returns a deep copy of everything recorded so far.
func (s *Server) Record() Record {
	r, _ := s.rec.snapshot()
	return r
}

// WaitFor evaluates cond on the record now and again after every change to
// it, and returns the first snapshot for which cond holds. It returns the
// last snapshot and ctx's error (wrapped) if ctx ends first, or an error if
// the server is closed while cond does not hold. cond must not block.
func (s *Server) WaitFor(ctx context.Context, cond func(Record) bool) (Record, error) {
	for {
		r, changed := s.rec.snapshot()
		if cond(r) {
			return r, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return r, fmt.Errorf("wait for record: %w", ctx.Err())
		case <-s.done:
			r, _ = s.rec.snapshot()
			if cond(r) {
				return r, nil
			}
			return r, errors.New("wait for record: server closed")
		}
	}
}

// GuildIDs returns every guild id, in creation order (AddGuilds appends).
func (s *Server) GuildIDs() []string {
	ids := make([]string, s.guildTotal())
	for k := range ids {
		ids[k] = strconv.FormatUint(guildID(k), 10)
	}
	return ids
}

// GuildIDsOf returns the ids of the guilds Discord routes to shard of
// count: those with (guild_id >> 22) % count == shard, in creation order,
// guilds added by AddGuilds included. Guild ids never change: guild k (in
// creation order) has the same id whatever the count and whenever asked.
func (s *Server) GuildIDsOf(shard, count int) []string {
	ks := guildsOf(s.guildTotal(), shard, count)
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = strconv.FormatUint(guildID(k), 10)
	}
	return ids
}
