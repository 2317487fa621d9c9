package cluster

import (
	"testing"

	"github.com/bwmarrin/discordgo"
)

// TestSessionFields fails if a discordgo upgrade renames or retypes the
// unexported fields the handoff reads and writes: then checkSessionFields
// turns the handoff off at run time, and this test says so at build time.
func TestSessionFields(t *testing.T) {
	f, err := checkSessionFields()
	if err != nil {
		t.Fatalf("the handoff cannot work with this discordgo: %v", err)
	}
	s, _ := discordgo.New("Bot x")
	if err := f.prime(s, "abc", 41, gatewayURL("wss://resume.example")); err != nil {
		t.Fatal(err)
	}
	id, seq, err := f.read(s)
	if err != nil || id != "abc" || seq != 41 {
		t.Fatalf("read back %q %d %v", id, seq, err)
	}
}
