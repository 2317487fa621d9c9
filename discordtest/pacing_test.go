package discordtest

import (
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Two bare discordgo shards of one bucket opened together: the second
// IDENTIFY breaks the pacing and gets op 9; discordgo re-identifies inline at
// once, again and again, until the fake closes it with 4008; it reconnects
// and is let in once the interval has passed. The fake answers the storm
// without deadlocking, records every refused IDENTIFY as TooSoon, and never
// accepts two IDENTIFYs of a bucket within the interval.
func TestIdentifyPacingAndOp9Storm(t *testing.T) {
	t.Parallel()
	const interval = 1500 * time.Millisecond
	srv := newTestServer(t, Options{Guilds: 4, Shards: 2, IdentifyInterval: interval})
	var bots []*discordgo.Session
	for shard := range 2 {
		b := newBot(t, srv, shard, 2)
		b.ShouldReconnectOnError = true
		bots = append(bots, b)
	}
	var wg sync.WaitGroup
	for _, b := range bots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Open(); err != nil {
				t.Errorf("open: %v", err)
			}
		}()
	}
	wg.Wait()
	r := waitFor(t, srv, "both shards live", func(r Record) bool {
		return r.Shard(0, 2).Live == 1 && r.Shard(1, 2).Live == 1 && settled(r, 0) && settled(r, 1)
	})
	if _, err := bots[0].Gateway(); err != nil {
		t.Errorf("REST after the storm: %v", err)
	}
	var last time.Time
	tooSoon, closed4008 := 0, 0
	for _, id := range r.Identifies {
		if id.Bucket != 0 {
			t.Errorf("identify in bucket %d with max_concurrency 1", id.Bucket)
		}
		switch {
		case id.Outcome == OutcomeReady:
			if !last.IsZero() && id.At.Sub(last) < interval {
				t.Errorf("two IDENTIFYs accepted %v apart, interval %v", id.At.Sub(last), interval)
			}
			last = id.At
			if id.TooSoon {
				t.Error("an accepted IDENTIFY is flagged TooSoon")
			}
		case id.TooSoon:
			tooSoon++
			if id.Outcome != OutcomeInvalidSession {
				t.Errorf("a too-soon IDENTIFY got %s", id.Outcome)
			}
		}
	}
	for _, c := range r.Connections {
		if c.CloseCode == 4008 && c.ClosedBy == ClosedByServer {
			closed4008++
		}
	}
	if tooSoon < DefaultSendRateLimit-1 || closed4008 == 0 {
		t.Errorf("storm: %d too-soon identifies, %d connections closed 4008", tooSoon, closed4008)
	}
	if r.Starts.Used != 2 || r.Identified(-1, OutcomeReady) != 2 {
		t.Errorf("session starts used %d, READYs %d: want 2 and 2", r.Starts.Used, r.Identified(-1, OutcomeReady))
	}
	t.Logf("%d identifies, %d too soon, %d closed 4008", len(r.Identifies), tooSoon, closed4008)
	closeBots(bots...)
}

// Shards in different buckets may identify together.
func TestIdentifyBuckets(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, Options{Guilds: 8, Shards: 4, MaxConcurrency: 2, IdentifyInterval: time.Hour})
	a := dialRaw(t, srv, "")
	b := dialRaw(t, srv, "")
	a.identify(srv, 0, 4)
	b.identify(srv, 1, 4) // bucket 1: accepted at once
	c := dialRaw(t, srv, "")
	c.send(identifyPayloadFor(srv.Token(), 2, 4, discordgo.IntentsGuilds, false)) // bucket 0 again
	if p := c.readUntil(9, ""); string(p.D) != "false" {
		t.Errorf("op 9 d = %s, want false", p.D)
	}
	r := srv.Record()
	if len(r.Identifies) != 3 {
		t.Fatalf("%d identifies", len(r.Identifies))
	}
	id := r.Identifies[2]
	if !id.TooSoon || id.Bucket != 0 || id.Gap <= 0 || id.Outcome != OutcomeInvalidSession || r.Identifies[1].TooSoon {
		t.Errorf("pacing violation not recorded: %+v", r.Identifies)
	}
	if r.Identifies[1].Gap != 0 {
		t.Errorf("first identify of bucket 1 has a gap %v", r.Identifies[1].Gap)
	}
	// The socket stays open after op 9: the same client may identify later.
	c.send(map[string]any{"op": 1, "d": nil})
	c.readUntil(11, "")
}
