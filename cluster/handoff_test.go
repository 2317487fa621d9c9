package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardvisor/shardvisor/discordtest"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// stop stops the fixture's cluster and waits for Run.
func (fx *fixture) stop(t *testing.T) {
	t.Helper()
	fx.cancel()
	select {
	case err := <-fx.done:
		fx.done <- err
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("did not stop")
	}
}

// handOverShard freezes the only shard of a fresh cluster and stops it:
// the session stays resumable at the fake (no close 1000), and what the
// freeze returned is the handoff.
func handOverShard(t *testing.T, opts discordtest.Options) (*discordtest.Server, *wire.HandoffShard) {
	t.Helper()
	fx := startCluster(t, opts, []int{0})
	fx.waitStatus(t, "ready", allReady)
	m := fx.c.shards[0].freeze(fx.c.fields, fx.c.fieldsErr)
	if m.SessionID.Empty() || len(m.Snapshot) == 0 || m.Seq == 0 || m.ResumeURL != fx.fake.ResumeGatewayURL() {
		t.Fatalf("handoff %v, reason %q, resume url %q", m, m.Reason, m.ResumeURL)
	}
	fx.stop(t)
	r := fx.waitRecord(t, "the session detached", func(r discordtest.Record) bool {
		return len(r.Sessions) == 1 && !r.Sessions[0].Alive()
	})
	if !r.Sessions[0].Resumable || r.Sessions[0].CloseCode == 1000 {
		t.Fatalf("after the freeze and the stop: %+v; want a detached, resumable session", r.Sessions)
	}
	if m.SessionID.Reveal() != r.Sessions[0].ID {
		t.Fatal("the handoff carries another session id")
	}
	return fx.fake, m
}

func inboxWith(t *testing.T, m *wire.HandoffShard) *handoffInbox {
	t.Helper()
	in := newHandoffInbox()
	first := *m
	first.Snapshot, first.More = m.Snapshot[:len(m.Snapshot)/2], true
	rest := wire.HandoffShard{Shard: m.Shard, Snapshot: m.Snapshot[len(m.Snapshot)/2:]}
	for _, c := range []*wire.HandoffShard{&first, &rest} {
		if err := in.add(c); err != nil {
			t.Fatal(err)
		}
	}
	in.end()
	return in
}

// A frozen shard's session and State go to a new cluster, which RESUMEs
// (no session start) with the State the old one had.
func TestHandoffResumesWithTheState(t *testing.T) {
	opts := discordtest.Options{Guilds: 4, Shards: 1, ChannelsPerGuild: 3, RolesPerGuild: 2, EventRate: 100}
	fake, m := handOverShard(t, opts)
	fx := startClusterWith(t, opts, []int{0}, setup{fake: fake, inbox: inboxWith(t, m)})
	fx.waitStatus(t, "ready", allReady)
	r := fake.Record()
	if r.Starts.Used != 1 || len(r.Identifies) != 1 || len(r.Resumes) != 1 || r.Resumes[0].Outcome != discordtest.OutcomeResumed {
		t.Fatalf("starts %d, identifies %d, resumes %+v", r.Starts.Used, len(r.Identifies), r.Resumes)
	}
	if r.Resumes[0].Seq != m.Seq {
		t.Errorf("resumed from %d, handed over %d", r.Resumes[0].Seq, m.Seq)
	}
	for _, c := range r.Connections {
		if c.ID == r.Resumes[0].Conn && c.Path != discordtest.ResumePath {
			t.Errorf("resumed at %s, not at READY's resume_gateway_url", c.Path)
		}
	}
	st := fx.c.shards[0].s.State
	st.RLock()
	user, guilds := st.User, len(st.Guilds)
	channels := 0
	for _, g := range st.Guilds {
		channels += len(g.Channels)
	}
	st.RUnlock()
	if user == nil || user.ID != fake.ApplicationID() || guilds != 4 || channels != 12 {
		t.Errorf("restored State: user %v, %d guilds, %d channels", user, guilds, channels)
	}
	if n := testutil.ToFloat64(fx.c.handoffMetrics.resumes.WithLabelValues(wire.CauseRollingRestart)); n != 1 {
		t.Errorf("handoff resumes %v", n)
	}
}

// A refused RESUME falls back to a paced IDENTIFY with a fresh State, and
// counts it.
func TestHandoffFallsBackWhenResumeIsRefused(t *testing.T) {
	opts := discordtest.Options{Guilds: 4, Shards: 1, ChannelsPerGuild: 3}
	fake, m := handOverShard(t, opts)
	fake.RefuseResumes(1)
	fx := startClusterWith(t, opts, []int{0}, setup{fake: fake, inbox: inboxWith(t, m)})
	fx.waitStatus(t, "ready", allReady)
	// Each cluster here has an identify queue of its own (a supervisor
	// shares one: the cli tests check the pacing across processes), so the
	// fallback may come too soon after the first cluster's IDENTIFY and be
	// refused once more: count the accepted ones.
	r := fake.Record()
	if n := r.Identified(0, discordtest.OutcomeReady); n != 2 || len(r.Resumes) != 1 || r.Resumes[0].Outcome != discordtest.OutcomeInvalidSession {
		t.Fatalf("identifies accepted %d, resumes %+v", n, r.Resumes)
	}
	if n := testutil.ToFloat64(fx.c.handoffMetrics.fallbacks.WithLabelValues(wire.CauseRollingRestart, FallbackResumeRefused)); n != 1 {
		t.Errorf("resume_refused fallbacks %v", n)
	}
	st := fx.c.shards[0].s.State
	st.RLock()
	guilds := len(st.Guilds)
	st.RUnlock()
	if guilds != 4 {
		t.Errorf("State after the fallback: %d guilds", guilds)
	}
}

// A frozen connection lets nothing out, discordgo's close 1000 included,
// and says when its reader is done.
func TestFrozenGateWritesNothing(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	got := make(chan int, 1)
	go func() { n, _ := io.Copy(io.Discard, b); got <- int(n) }()
	g := newGatedConn(t.Context(), a, &fakeHooks{})
	g.w.handshake = false
	read := make(chan error, 1)
	go func() { _, err := g.Read(make([]byte, 8)); read <- err }()
	drained := g.freeze()
	if _, err := g.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}); !errors.Is(err, errFrozen) {
		t.Fatalf("write after freeze: %v", err)
	}
	select {
	case <-drained:
	case <-time.After(patience):
		t.Fatal("not drained after the reader failed")
	}
	if err := <-read; err == nil {
		t.Fatal("the reader did not fail")
	}
	b.Close()
	if n := <-got; n != 0 {
		t.Fatalf("%d bytes left a frozen gate", n)
	}
	// A reader that had failed before the freeze is done at once.
	c, d := net.Pipe()
	d.Close()
	g2 := newGatedConn(t.Context(), c, &fakeHooks{})
	g2.Read(make([]byte, 1))
	select {
	case <-g2.freeze():
	default:
		t.Fatal("a failed reader is not drained at the freeze")
	}
}

// A command running when its shard is frozen for a handoff finishes, its
// context alive, before the process's Run returns.
func TestHandoffLetsCommandsFinish(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	ctxErr := make(chan error, 1)
	fx := startClusterWith(t, discordtest.Options{Guilds: 1, Shards: 1}, []int{0}, setup{bot: func(b *Bot) {
		b.Command(&discordgo.ApplicationCommand{Name: "slow", Description: "waits"}, func(i *Interaction) error {
			close(started)
			<-release
			ctxErr <- i.Context.Err()
			return i.Reply("done")
		})
	}})
	fx.waitStatus(t, "ready", allReady)
	replied := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		rep, err := fx.fake.Interact(ctx, discordtest.Interaction{GuildID: fx.fake.GuildIDs()[0], Command: "slow"})
		if err != nil {
			rep.Content = err.Error()
		}
		replied <- rep.Content
	}()
	<-started
	fx.c.frozen.Store(true) // as handOver does
	fx.c.shards[0].freeze(fx.c.fields, fx.c.fieldsErr)
	fx.cancel()
	select {
	case err := <-fx.done:
		fx.done <- err
		close(release)
		t.Fatal("Run returned while a command was running")
	case <-time.After(50 * time.Millisecond): // not a timed assertion: Run must not return at all before release
	}
	close(release)
	if err := <-ctxErr; err != nil {
		t.Errorf("the command's context ended at the freeze: %v", err)
	}
	if got := <-replied; got != "done" {
		t.Errorf("reply %q", got)
	}
	select {
	case err := <-fx.done:
		fx.done <- err
	case <-time.After(patience):
		t.Fatal("Run did not return")
	}
}
