package cluster

import (
	"reflect"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
)

func TestInGoroutine(t *testing.T) {
	release := make(chan struct{})
	got := make(chan *discordgo.MessageCreate, 1)
	h := inGoroutine(func(_ *discordgo.Session, m *discordgo.MessageCreate) {
		<-release
		got <- m
	}, nil)
	wrapped, ok := h.(func(*discordgo.Session, *discordgo.MessageCreate))
	if !ok {
		t.Fatalf("wrapped handler has type %T: discordgo's AddHandler would refuse it", h)
	}
	m := &discordgo.MessageCreate{}
	returned := make(chan struct{})
	go func() { wrapped(nil, m); close(returned) }()
	select {
	case <-returned: // although the handler blocks
	case <-time.After(patience):
		close(release)
		t.Fatal("the wrapper waited for the handler")
	}
	close(release)
	select {
	case g := <-got:
		if g != m {
			t.Error("the handler got another event")
		}
	case <-time.After(patience):
		t.Fatal("the handler never ran")
	}

	// What AddHandler refuses is left as it is, for it to refuse.
	for _, h := range []any{nil, 42} {
		if out := inGoroutine(h, nil); out != h {
			t.Errorf("%v came back as %v", h, out)
		}
	}
	var nilFunc func(*discordgo.Session, *discordgo.Ready)
	for _, h := range []any{nilFunc, func() {}, func(*discordgo.Session, *discordgo.Ready) error { return nil }} {
		out := inGoroutine(h, nil)
		if reflect.TypeOf(out) != reflect.TypeOf(h) || reflect.ValueOf(out).Pointer() != reflect.ValueOf(h).Pointer() {
			t.Errorf("%T came back wrapped", h)
		}
	}
	type named func(*discordgo.Session, *discordgo.MessageCreate)
	if _, ok := inGoroutine(named(func(*discordgo.Session, *discordgo.MessageCreate) {}), nil).(named); !ok {
		t.Error("a handler of a named type changed type")
	}
}

// allow is asked in the caller's goroutine, with the event, before the
// handler's goroutine starts; what it refuses never reaches the handler.
func TestInGoroutineAsksAllow(t *testing.T) {
	got := make(chan *discordgo.MessageCreate, 2)
	var asked []any
	h := inGoroutine(func(_ *discordgo.Session, m *discordgo.MessageCreate) { got <- m },
		func(e any) bool { asked = append(asked, e); return len(asked) == 2 })
	wrapped := h.(func(*discordgo.Session, *discordgo.MessageCreate))
	refused, allowed := &discordgo.MessageCreate{}, &discordgo.MessageCreate{}
	wrapped(nil, refused)
	wrapped(nil, allowed)
	if len(asked) != 2 || asked[0] != refused || asked[1] != allowed {
		t.Fatalf("allow was asked %v", asked)
	}
	select {
	case m := <-got:
		if m != allowed {
			t.Fatal("the handler got the refused event")
		}
	case <-time.After(patience):
		t.Fatal("the allowed event never reached the handler")
	}
	// An interface{} handler is asked about the event, not the interface.
	var dyn any
	ih := inGoroutine(func(*discordgo.Session, any) {}, func(e any) bool { dyn = e; return false })
	ih.(func(*discordgo.Session, any))(nil, refused)
	if dyn != refused {
		t.Fatalf("allow was asked about %T", dyn)
	}
}
