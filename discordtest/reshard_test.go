package discordtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// GuildIDsOf routes by (guild_id >> 22) % count for any count, and guild
// ids stay put as guilds are added.
func TestGuildIDsOfRoutesByCount(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 10})
	before := srv.GuildIDs()
	added, err := srv.AddGuilds(3)
	if err != nil {
		t.Fatal(err)
	}
	all := srv.GuildIDs()
	if !slices.Equal(all[:10], before) || !slices.Equal(all[10:], added) || len(all) != 13 {
		t.Fatalf("ids before %v, added %v, after %v", before, added, all)
	}
	index := func(id string) int { return slices.Index(all, id) }
	for _, tc := range []struct {
		shard, count int
		want         []int // guild indexes, in creation order
	}{
		{0, 1, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{1, 2, []int{1, 3, 5, 7, 9, 11}},
		{1, 4, []int{1, 5, 9}},
		{3, 4, []int{3, 7, 11}},
		{0, 8, []int{0, 8}},
		{12, 16, []int{12}},
		{13, 16, nil},
		{2, 3, []int{2, 5, 8, 11}},
		{4, 4, nil}, // not a shard of 4
	} {
		var got []int
		for _, id := range srv.GuildIDsOf(tc.shard, tc.count) {
			got = append(got, index(id))
			n, _ := strconv.ParseUint(id, 10, 64)
			if int((n>>22)%uint64(tc.count)) != tc.shard {
				t.Errorf("guild %s in GuildIDsOf(%d, %d) routes to %d", id, tc.shard, tc.count, (n>>22)%uint64(tc.count))
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("GuildIDsOf(%d, %d) = guilds %v, want %v", tc.shard, tc.count, got, tc.want)
		}
	}
	// For a count that does not divide the id base, the guilds of each
	// shard still partition them.
	seen := map[string]int{}
	for shard := range 17 {
		for _, id := range srv.GuildIDsOf(shard, 17) {
			n, _ := strconv.ParseUint(id, 10, 64)
			if int((n>>22)%17) != shard {
				t.Errorf("guild %s on shard %d of 17 routes to %d", id, shard, (n>>22)%17)
			}
			seen[id]++
		}
	}
	if len(seen) != 13 {
		t.Errorf("17 shards hold %d guilds, want 13", len(seen))
	}
	for _, n := range []int{0, -1, maxGuilds} {
		if _, err := srv.AddGuilds(n); err == nil {
			t.Errorf("AddGuilds(%d) succeeded", n)
		}
	}
	if o := srv.Options(); o.Guilds != 13 {
		t.Errorf("Options().Guilds = %d, want 13", o.Guilds)
	}
}

// With sessions of two shard counts live, an interaction in a guild goes
// to its shard of each count, and to no other session.
func TestInteractionGoesToEveryCount(t *testing.T) {
	t.Parallel()
	for _, counts := range [][]int{{1, 2}, {2, 4}, {3, 5}, {4, 8, 16}} {
		t.Run(fmt.Sprint(counts), func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, Options{Guilds: 20, IdentifyInterval: 1})
			keyOf := map[string]shardKey{}
			for _, count := range counts {
				for shard := range count {
					id, _ := dialRaw(t, srv, "").identify(srv, shard, count)
					keyOf[id] = shardKey{shard, count}
				}
			}
			done, cancel := context.WithCancel(context.Background())
			cancel() // Interact dispatches, then returns at once: nobody answers
			for _, g := range srv.GuildIDs() {
				srv.Interact(done, Interaction{GuildID: g, Command: "ping"})
			}
			r := srv.Record()
			if len(r.Interactions) != 20 {
				t.Fatalf("%d interactions recorded, want 20", len(r.Interactions))
			}
			for _, in := range r.Interactions {
				n, _ := strconv.ParseUint(in.GuildID, 10, 64)
				var got, want []shardKey
				for _, id := range in.Sessions {
					got = append(got, keyOf[id])
				}
				for _, c := range counts {
					want = append(want, shardKey{int((n >> 22) % uint64(c)), c})
				}
				slices.SortFunc(got, func(a, b shardKey) int { return a.count - b.count })
				if !slices.Equal(got, want) {
					t.Errorf("interaction in guild %s went to %v, want %v", in.GuildID, got, want)
				}
				if in.Shard != 0 {
					t.Errorf("interaction routed to shard %d with 1 recommended shard", in.Shard)
				}
			}
		})
	}
}

// botSeen is what one discordgo bot of a two-count test saw.
type botSeen struct {
	shard, count int
	session      string
	guilds       []string // GUILD_CREATE ids, in order
	interactions []string // interaction ids
	messages     []string // MESSAGE_CREATE guild ids
}

// discordgo bots of counts 2 and 4 live together: each gets its guilds,
// each guild added later, each guild's interactions and its load, on
// exactly one bot of each count, the one (guild_id >> 22) % count names.
func TestTwoShardCountsWithDiscordgo(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 12, Shards: 2, MaxConcurrency: 2, IdentifyInterval: 1})
	var mu sync.Mutex
	sig := newSignal()
	var seen []*botSeen
	var bots []*discordgo.Session
	for _, count := range []int{2, 4} {
		for shard := range count {
			bs := &botSeen{shard: shard, count: count}
			seen = append(seen, bs)
			b := newBot(t, srv, shard, count)
			b.AddHandler(func(_ *discordgo.Session, r *discordgo.Ready) {
				mu.Lock()
				bs.session = r.SessionID
				mu.Unlock()
				sig.notify()
			})
			b.AddHandler(func(_ *discordgo.Session, g *discordgo.GuildCreate) {
				mu.Lock()
				bs.guilds = append(bs.guilds, g.ID)
				mu.Unlock()
				sig.notify()
			})
			b.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
				mu.Lock()
				bs.interactions = append(bs.interactions, i.ID)
				mu.Unlock()
				sig.notify()
				if count == 2 { // the old shard set answers
					pong(s, i)
				}
			})
			b.AddHandler(func(_ *discordgo.Session, m *discordgo.MessageCreate) {
				mu.Lock()
				bs.messages = append(bs.messages, m.GuildID)
				mu.Unlock()
				sig.notify()
			})
			bots = append(bots, b)
		}
	}
	for _, b := range bots {
		if err := b.Open(); err != nil {
			t.Fatalf("open: %v", err)
		}
	}
	waitFor(t, srv, "six sessions live and settled", func(r Record) bool {
		for _, bs := range seen {
			if r.Shard(bs.shard, bs.count).Live != 1 || !settled(r, bs.shard) {
				return false
			}
		}
		return true
	})
	allLive := time.Now()
	waitGuilds := func(total int) {
		waitClient(t, sig, fmt.Sprintf("%d guilds on each count", total), func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, bs := range seen {
				n += len(bs.guilds)
			}
			return n == 2*total
		})
	}
	waitGuilds(12)
	added, err := srv.AddGuilds(4)
	if err != nil {
		t.Fatal(err)
	}
	waitGuilds(16)
	mu.Lock()
	for _, bs := range seen {
		// discordgo runs handlers in goroutines of their own: any order.
		if want := srv.GuildIDsOf(bs.shard, bs.count); !slices.Equal(slices.Sorted(slices.Values(bs.guilds)), slices.Sorted(slices.Values(want))) {
			t.Errorf("shard %d of %d got GUILD_CREATEs %v, want %v", bs.shard, bs.count, bs.guilds, want)
		}
	}
	mu.Unlock()

	ctx := testContext(t)
	for _, g := range srv.GuildIDs() {
		if rp, err := srv.Interact(ctx, Interaction{GuildID: g, Command: "ping"}); err != nil || rp.Content != "Pong!" {
			t.Fatalf("interact in %s: %+v, %v", g, rp, err)
		}
	}
	waitClient(t, sig, "every interaction on each count", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, bs := range seen {
			n += len(bs.interactions)
		}
		return n == 2*16
	})
	r := srv.Record()
	mu.Lock()
	for _, in := range r.Interactions {
		n, _ := strconv.ParseUint(in.GuildID, 10, 64)
		var want []string
		for _, bs := range seen {
			got := slices.Contains(bs.interactions, in.ID)
			routed := int((n>>22)%uint64(bs.count)) == bs.shard
			if got != routed {
				t.Errorf("interaction in guild %s: on shard %d of %d %v, routed there %v", in.GuildID, bs.shard, bs.count, got, routed)
			}
			if routed {
				want = append(want, bs.session)
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(in.Sessions)), slices.Sorted(slices.Values(want))) {
			t.Errorf("interaction in guild %s recorded for sessions %v, want %v", in.GuildID, in.Sessions, want)
		}
	}
	mu.Unlock()

	for _, g := range added {
		ls, err := srv.LiveSessionsOf(g)
		if err != nil || len(ls) != 2 || ls[0].ShardCount != 2 || ls[1].ShardCount != 4 {
			t.Errorf("LiveSessionsOf(%s) = %+v, %v", g, ls, err)
		}
	}
	srv.SetEventRate(100)
	waitClient(t, sig, "load in every guild on every bot", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, bs := range seen {
			for _, g := range srv.GuildIDsOf(bs.shard, bs.count) {
				if !slices.Contains(bs.messages, g) {
					return false
				}
			}
		}
		return true
	})
	srv.SetEventRate(0)
	mu.Lock()
	for _, bs := range seen {
		want := srv.GuildIDsOf(bs.shard, bs.count)
		for _, g := range bs.messages {
			if !slices.Contains(want, g) {
				t.Errorf("shard %d of %d got MESSAGE_CREATE of guild %s", bs.shard, bs.count, g)
			}
		}
	}
	mu.Unlock()
	if gaps := srv.Uncovered(allLive, time.Time{}); len(gaps) != 0 {
		t.Errorf("gaps while every session was live: %+v", gaps)
	}
	closeBots(bots...)
}

// GET gateway/bot answers the recommended shard count of the moment.
func TestSetRecommendedShards(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Shards: 2})
	b := newBot(t, srv, 0, 1)
	gw, err := b.GatewayBot()
	if err != nil || gw.Shards != 2 {
		t.Fatalf("GatewayBot = %+v, %v; want 2 shards", gw, err)
	}
	if err := srv.SetRecommendedShards(16); err != nil {
		t.Fatal(err)
	}
	if gw, err = b.GatewayBot(); err != nil || gw.Shards != 16 {
		t.Fatalf("GatewayBot after SetRecommendedShards(16) = %+v, %v", gw, err)
	}
	if o := srv.Options(); o.Shards != 16 || srv.RecommendedShards() != 16 {
		t.Errorf("Options().Shards = %d, RecommendedShards = %d; want 16", o.Shards, srv.RecommendedShards())
	}
	for _, n := range []int{0, -3} {
		if err := srv.SetRecommendedShards(n); err == nil {
			t.Errorf("SetRecommendedShards(%d) succeeded", n)
		}
	}
	if srv.RecommendedShards() != 16 {
		t.Errorf("a refused SetRecommendedShards changed the count to %d", srv.RecommendedShards())
	}
	resp, body := restDo(t, srv, "POST", ControlPrefix+"/recommended-shards", "", map[string]int{"shards": 24})
	if resp.StatusCode != 200 || srv.RecommendedShards() != 24 {
		t.Errorf("POST recommended-shards: %d %s, count %d", resp.StatusCode, body, srv.RecommendedShards())
	}
	if resp, body = restDo(t, srv, "POST", ControlPrefix+"/recommended-shards", "", map[string]int{"shards": 0}); resp.StatusCode != 400 {
		t.Errorf("POST recommended-shards 0: %d %s", resp.StatusCode, body)
	}
}

// guildCreated reads GUILD_CREATEs until the one of guild id; it fails on
// any other dispatch but GUILD_CREATE of a guild not in skip.
func (c *rawClient) guildCreated(id string, skip []string) {
	c.t.Helper()
	for {
		p := c.read()
		if p.Op != 0 {
			continue
		}
		var d struct {
			ID string `json:"id"`
		}
		json.Unmarshal(p.D, &d)
		switch {
		case p.T == "GUILD_CREATE" && d.ID == id:
			return
		case p.T == "GUILD_CREATE" && slices.Contains(skip, d.ID):
		default:
			c.t.Fatalf("waiting for GUILD_CREATE of %s: got %s of %s", id, p.T, d.ID)
		}
	}
}

// A guild that makes a shard hold more than MaxGuildsPerShard closes that
// shard's sessions with 4011, not resumable, live or detached; other
// shards and counts get the GUILD_CREATE and carry on.
func TestAddGuildsPastTheLimit(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 4, MaxGuildsPerShard: 3, IdentifyInterval: 1})
	ids := srv.GuildIDs()
	a := dialRaw(t, srv, "") // shard 0 of 2: guilds 0, 2
	aID, _ := a.identify(srv, 0, 2)
	b := dialRaw(t, srv, "") // shard 1 of 2: guilds 1, 3
	bID, _ := b.identify(srv, 1, 2)
	c := dialRaw(t, srv, "") // shard 0 of 4: guild 0
	c.identify(srv, 0, 4)
	a.guildCreated(ids[2], ids[:1])
	b.guildCreated(ids[3], ids[1:2])
	c.guildCreated(ids[0], nil)

	g4, err := srv.AddGuilds(1) // shard 0 of 2 (3 guilds), shard 0 of 4
	if err != nil {
		t.Fatal(err)
	}
	a.guildCreated(g4[0], nil)
	c.guildCreated(g4[0], nil)
	g5, _ := srv.AddGuilds(1) // shard 1 of 2 (3 guilds), shard 1 of 4 (nobody)
	b.guildCreated(g5[0], nil)
	g6, _ := srv.AddGuilds(1) // shard 0 of 2 would hold 4: 4011
	a.expectClose(4011)
	r := waitFor(t, srv, "the oversized session ended", func(r Record) bool {
		s, _ := r.Session(aID)
		return !s.Alive()
	})
	if s, _ := r.Session(aID); s.CloseCode != 4011 || s.ClosedBy != ClosedByServer || s.Resumable {
		t.Errorf("oversized session %+v, want closed by the server with 4011, not resumable", s)
	}
	if r.Shard(1, 2).Live != 1 || r.Shard(0, 4).Live != 1 || r.Shard(0, 2).Live != 0 {
		t.Errorf("live after the 4011: %+v", r.Shards)
	}
	if len(r.GuildGrowth) != 4 || r.GuildGrowth[3].Guilds != 7 {
		t.Errorf("guild growth %+v", r.GuildGrowth)
	}
	// The session cannot be resumed, and the shard cannot be identified.
	re := dialRaw(t, srv, "")
	re.send(map[string]any{"op": 6, "d": map[string]any{"token": srv.Token(), "session_id": aID, "seq": 3}})
	if p := re.read(); p.Op != 9 || string(p.D) != "false" {
		t.Errorf("RESUME of the 4011 session: op %d d %s, want op 9 false", p.Op, p.D)
	}
	re.send(identifyPayloadFor(srv.Token(), 0, 2, discordgo.IntentsGuilds, false))
	re.expectClose(4011)
	// Shard 2 of 4 holds guild 6 now: its new session is told about it.
	d := dialRaw(t, srv, "")
	d.identify(srv, 2, 4)
	d.guildCreated(g6[0], ids[2:3])
	// Neither b (shard 1 of 2) nor c (shard 0 of 4) got guild 6: their next
	// dispatch is an interaction.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	srv.Interact(done, Interaction{GuildID: ids[0], Command: "ping"})
	srv.Interact(done, Interaction{GuildID: ids[1], Command: "ping"})
	if p := c.readUntil(0, ""); p.T != "INTERACTION_CREATE" {
		t.Errorf("shard 0 of 4 got %s, want INTERACTION_CREATE", p.T)
	}
	if p := b.readUntil(0, ""); p.T != "INTERACTION_CREATE" {
		t.Errorf("shard 1 of 2 got %s, want INTERACTION_CREATE", p.T)
	}
	// A detached session of a shard that grows too big stops being
	// resumable.
	b.ws.Close() // no close frame: resumable
	waitFor(t, srv, "b detached", func(r Record) bool {
		s, _ := r.Session(bID)
		return !s.Alive() && s.Resumable
	})
	if _, err := srv.AddGuilds(2); err != nil { // guild 7 on shard 1 of 2: 4 guilds
		t.Fatal(err)
	}
	r = srv.Record()
	if s, _ := r.Session(bID); s.Resumable {
		t.Errorf("detached oversized session %+v, want no longer resumable", s)
	}
	re = dialRaw(t, srv, "")
	re.send(map[string]any{"op": 6, "d": map[string]any{"token": srv.Token(), "session_id": bID, "seq": 1}})
	if p := re.read(); p.Op != 9 || string(p.D) != "false" {
		t.Errorf("RESUME of the detached oversized session: op %d d %s, want op 9 false", p.Op, p.D)
	}
	resp, body := restDo(t, srv, "POST", ControlPrefix+"/add-guilds", "", map[string]int{"n": 1})
	var out struct {
		GuildIDs []string `json:"guild_ids"`
		Guilds   int      `json:"guilds"`
	}
	if json.Unmarshal(body, &out); resp.StatusCode != 200 || out.Guilds != 10 || len(out.GuildIDs) != 1 || out.GuildIDs[0] != srv.GuildIDs()[9] {
		t.Errorf("POST add-guilds: %d %s", resp.StatusCode, body)
	}
}

// closeNormal closes a raw client's session from the client side with
// 1000: the session ends.
func (c *rawClient) closeNormal() {
	c.t.Helper()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(waitTimeout))
	c.expectCloseAny()
}

// expectCloseAny reads until the connection ends.
func (c *rawClient) expectCloseAny() {
	for {
		if _, err := c.next(); err != nil {
			return
		}
	}
}

// A reshard from 2 to 4 shards: a shard of 2 closed before its guilds'
// shards of 4 are live leaves a gap, exactly from its end to their start;
// one closed after they are live leaves none.
func TestCoverageAcrossAReshard(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 8, IdentifyInterval: 1})
	ids := srv.GuildIDs()
	live := func(r Record, shard, count int) Interval {
		l := r.Shard(shard, count)
		if len(l.Intervals) == 0 {
			t.Fatalf("shard %d of %d never live", shard, count)
		}
		return l.Intervals[len(l.Intervals)-1]
	}
	a0, a1 := dialRaw(t, srv, ""), dialRaw(t, srv, "")
	a0.identify(srv, 0, 2)
	a1.identify(srv, 1, 2)
	t0 := time.Now()
	if gaps := srv.Uncovered(t0, time.Time{}); len(gaps) != 0 {
		t.Fatalf("gaps with both shards live: %+v", gaps)
	}
	if gaps := srv.Uncovered(time.Time{}, t0); len(gaps) != 8 { // each guild before its shard's READY
		t.Errorf("%d gaps before the first READYs, want 8: %+v", len(gaps), gaps)
	}

	// Shard 0 of 2 goes first: its guilds 0, 2, 4, 6 are uncovered until
	// shards 0 and 2 of 4 are live.
	a0.closeNormal()
	waitFor(t, srv, "shard 0 of 2 down", func(r Record) bool { return r.Shard(0, 2).Live == 0 })
	if ls, _ := srv.LiveSessionsOf(ids[0]); len(ls) != 0 {
		t.Errorf("live sessions of guild 0 with its shard down: %+v", ls)
	}
	b0, b2 := dialRaw(t, srv, ""), dialRaw(t, srv, "")
	b0.identify(srv, 0, 4)
	b2.identify(srv, 2, 4)
	t1 := time.Now()
	r := srv.Record()
	end := live(r, 0, 2).To
	want := []Gap{
		{ids[0], end, live(r, 0, 4).From}, {ids[2], end, live(r, 2, 4).From},
		{ids[4], end, live(r, 0, 4).From}, {ids[6], end, live(r, 2, 4).From},
	}
	slices.SortStableFunc(want, func(a, b Gap) int { return a.From.Compare(b.From) })
	if gaps := r.Uncovered(t0, t1); !slices.EqualFunc(gaps, want, gapEqual) {
		t.Errorf("gaps of the early close %+v, want %+v", gaps, want)
	}

	// Shards 1 and 3 of 4 are live before shard 1 of 2 goes: no gap.
	b1, b3 := dialRaw(t, srv, ""), dialRaw(t, srv, "")
	b1ID, _ := b1.identify(srv, 1, 4)
	b3.identify(srv, 3, 4)
	ls, _ := srv.LiveSessionsOf(ids[1])
	if len(ls) != 2 || ls[0] != (LiveSession{ls[0].ID, 1, 2}) || ls[1] != (LiveSession{b1ID, 1, 4}) {
		t.Errorf("live sessions of guild 1 in the overlap: %+v", ls)
	}
	a1.closeNormal()
	waitFor(t, srv, "shard 1 of 2 down", func(r Record) bool { return r.Shard(1, 2).Live == 0 })
	t2 := time.Now()
	if gaps := srv.Uncovered(t1, t2); len(gaps) != 0 {
		t.Errorf("gaps of the late close: %+v", gaps)
	}
	if gaps := srv.Uncovered(t0, t2); !slices.EqualFunc(gaps, want, gapEqual) {
		t.Errorf("gaps of the whole reshard %+v, want %+v", gaps, want)
	}

	// A guild added to a shard nobody holds is uncovered from its
	// addition; so are the guilds of a shard that goes down.
	b3.closeNormal()
	waitFor(t, srv, "shard 3 of 4 down", func(r Record) bool { return r.Shard(3, 4).Live == 0 })
	added, _ := srv.AddGuilds(4) // guilds 8-11; 11 is on shard 3 of 4
	t3 := time.Now()
	r = srv.Record()
	down := live(r, 3, 4).To
	want = []Gap{{ids[3], down, t3}, {ids[7], down, t3}, {added[3], r.GuildGrowth[1].At, t3}}
	if gaps := r.Uncovered(t2, t3); !slices.EqualFunc(gaps, want, gapEqual) {
		t.Errorf("gaps after shard 3 of 4 went down %+v, want %+v", gaps, want)
	}
	resp, body := restDo(t, srv, "GET", ControlPrefix+"/uncovered?from="+t2.Format(time.RFC3339Nano)+"&to="+t3.Format(time.RFC3339Nano), "", nil)
	var out struct {
		Gaps []Gap `json:"gaps"`
	}
	if json.Unmarshal(body, &out); resp.StatusCode != 200 || len(out.Gaps) != 3 {
		t.Errorf("GET uncovered: %d %s", resp.StatusCode, body)
	}
	resp, body = restDo(t, srv, "GET", ControlPrefix+"/live-sessions?guild_id="+ids[1], "", nil)
	var ss struct {
		Sessions []LiveSession `json:"sessions"`
	}
	if json.Unmarshal(body, &ss); resp.StatusCode != 200 || len(ss.Sessions) != 1 || ss.Sessions[0].ID != b1ID {
		t.Errorf("GET live-sessions: %d %s", resp.StatusCode, body)
	}
	if resp, _ = restDo(t, srv, "GET", ControlPrefix+"/live-sessions?guild_id=42", "", nil); resp.StatusCode != 404 {
		t.Errorf("GET live-sessions of an unknown guild: %d", resp.StatusCode)
	}
}

func gapEqual(a, b Gap) bool {
	return a.GuildID == b.GuildID && a.From.Equal(b.From) && a.To.Equal(b.To)
}

// Uncovered's arithmetic on recorded intervals.
func TestUncoveredTable(t *testing.T) {
	t.Parallel()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	iv := func(from, to int) Interval {
		if to < 0 {
			return Interval{From: at(from)}
		}
		return Interval{From: at(from), To: at(to)}
	}
	g := func(k int) string { return strconv.FormatUint(guildID(k), 10) }
	type gap struct{ k, from, to int }
	cases := []struct {
		name     string
		shards   []ShardLive
		growth   []GuildCount // default: 4 guilds from 0
		from, to int
		want     []gap
	}{
		{"one count throughout", []ShardLive{
			{Shard: 0, ShardCount: 2, Intervals: []Interval{iv(0, -1)}},
			{Shard: 1, ShardCount: 2, Intervals: []Interval{iv(0, 100)}},
		}, nil, 0, 100, nil},
		{"a shard down for a while", []ShardLive{
			{Shard: 0, ShardCount: 2, Intervals: []Interval{iv(0, 10), iv(20, -1)}},
			{Shard: 1, ShardCount: 2, Intervals: []Interval{iv(0, -1)}},
		}, nil, 0, 100, []gap{{0, 10, 20}, {2, 10, 20}}},
		{"before the first ready", []ShardLive{
			{Shard: 0, ShardCount: 1, Intervals: []Interval{iv(5, -1)}},
		}, nil, 0, 100, []gap{{0, 0, 5}, {1, 0, 5}, {2, 0, 5}, {3, 0, 5}}},
		{"reshard with overlap", []ShardLive{
			{Shard: 0, ShardCount: 2, Intervals: []Interval{iv(0, 50)}},
			{Shard: 1, ShardCount: 2, Intervals: []Interval{iv(0, 60)}},
			{Shard: 0, ShardCount: 4, Intervals: []Interval{iv(40, -1)}},
			{Shard: 1, ShardCount: 4, Intervals: []Interval{iv(41, -1)}},
			{Shard: 2, ShardCount: 4, Intervals: []Interval{iv(42, -1)}},
			{Shard: 3, ShardCount: 4, Intervals: []Interval{iv(60, -1)}}, // starts as the old one ends
		}, nil, 0, 100, nil},
		{"reshard with a hole", []ShardLive{
			{Shard: 0, ShardCount: 2, Intervals: []Interval{iv(0, 50)}},
			{Shard: 1, ShardCount: 2, Intervals: []Interval{iv(0, 60)}},
			{Shard: 0, ShardCount: 4, Intervals: []Interval{iv(40, -1)}},
			{Shard: 1, ShardCount: 4, Intervals: []Interval{iv(41, -1)}},
			{Shard: 2, ShardCount: 4, Intervals: []Interval{iv(55, -1)}},
			{Shard: 3, ShardCount: 4, Intervals: []Interval{iv(70, 80)}},
		}, nil, 0, 100, []gap{{2, 50, 55}, {3, 60, 70}, {3, 80, 100}}},
		{"clipped to the window", []ShardLive{
			{Shard: 0, ShardCount: 1, Intervals: []Interval{iv(0, 10), iv(30, 40)}},
		}, nil, 5, 35, []gap{{0, 10, 30}, {1, 10, 30}, {2, 10, 30}, {3, 10, 30}}},
		{"a guild added later", []ShardLive{
			{Shard: 0, ShardCount: 2, Intervals: []Interval{iv(0, -1)}},
			{Shard: 1, ShardCount: 2, Intervals: []Interval{iv(0, 30)}},
		}, []GuildCount{{at(0), 4}, {at(50), 6}, {at(200), 8}}, 0, 100, []gap{{1, 30, 100}, {3, 30, 100}, {5, 50, 100}}},
		{"an empty window", []ShardLive{
			{Shard: 0, ShardCount: 1},
		}, nil, 10, 10, nil},
		{"nobody ever live", nil, []GuildCount{{at(0), 2}}, 0, 10, []gap{{0, 0, 10}, {1, 0, 10}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			growth := tc.growth
			if growth == nil {
				growth = []GuildCount{{at(0), 4}}
			}
			r := Record{Shards: tc.shards, GuildGrowth: growth}
			want := []Gap{}
			for _, w := range tc.want {
				want = append(want, Gap{g(w.k), at(w.from), at(w.to)})
			}
			if got := r.Uncovered(at(tc.from), at(tc.to)); !slices.EqualFunc(got, want, gapEqual) {
				t.Errorf("Uncovered = %+v, want %+v", got, want)
			}
		})
	}
}
