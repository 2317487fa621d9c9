package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/bwmarrin/discordgo"
)

// discordgo v0.29.0 keeps a session's resume data in unexported fields and
// has no API to read or set them (upstream issue 1502): sessionID, written
// by its READY handler, and sequence, stored on every dispatch; gateway is
// the URL Open dials. This file is the only place that touches them, by
// reflection and unsafe. sessionFields checks their names and types once:
// if a discordgo upgrade renames or retypes them, the check fails, and the
// handoff is off (every shard identifies, as before the handoff existed).
// TestSessionFields fails loudly too.

// sessionFieldsOK is the result of the self-check.
type sessionFieldsOK struct {
	sessionID, sequence, gateway uintptr // offsets
}

// checkSessionFields finds the fields and checks their types.
func checkSessionFields() (sessionFieldsOK, error) {
	t := reflect.TypeFor[discordgo.Session]()
	var ok sessionFieldsOK
	for _, f := range []struct {
		name string
		want reflect.Type
		off  *uintptr
	}{
		{"sessionID", reflect.TypeFor[string](), &ok.sessionID},
		{"sequence", reflect.TypeFor[*int64](), &ok.sequence},
		{"gateway", reflect.TypeFor[string](), &ok.gateway},
	} {
		sf, found := t.FieldByName(f.name)
		if !found {
			return ok, fmt.Errorf("discordgo.Session has no field %s", f.name)
		}
		if sf.Type != f.want {
			return ok, fmt.Errorf("discordgo.Session.%s is a %s, not a %s", f.name, sf.Type, f.want)
		}
		*f.off = sf.Offset
	}
	return ok, nil
}

var errNoSequence = errors.New("discordgo session has no sequence counter")

// read returns s's session id and last dispatched sequence number. The
// caller makes sure that nothing writes them meanwhile (the frozen shard's
// reading goroutine is done).
func (f sessionFieldsOK) read(s *discordgo.Session) (id string, seq int64, err error) {
	p := unsafe.Pointer(s)
	id = *(*string)(unsafe.Add(p, f.sessionID))
	sp := *(**int64)(unsafe.Add(p, f.sequence))
	if sp == nil {
		return "", 0, errNoSequence
	}
	return id, atomic.LoadInt64(sp), nil
}

// lastSeq returns the last sequence number discordgo received. It may be
// called at any time: discordgo sets the counter's pointer once, in New,
// and stores to it atomically.
func (f sessionFieldsOK) lastSeq(s *discordgo.Session) int64 {
	sp := *(**int64)(unsafe.Add(unsafe.Pointer(s), f.sequence))
	if sp == nil {
		return 0
	}
	return atomic.LoadInt64(sp)
}

// prime makes s's next Open RESUME session id at seq, dialling gateway (a
// full URL, query included). It must be called before Open, with no
// connection up.
func (f sessionFieldsOK) prime(s *discordgo.Session, id string, seq int64, gateway string) error {
	s.Lock()
	defer s.Unlock()
	p := unsafe.Pointer(s)
	sp := *(**int64)(unsafe.Add(p, f.sequence))
	if sp == nil {
		return errNoSequence
	}
	*(*string)(unsafe.Add(p, f.sessionID)) = id
	atomic.StoreInt64(sp, seq)
	*(*string)(unsafe.Add(p, f.gateway)) = gateway
	return nil
}

// setGateway sets the URL the next Open dials ("": ask GET /gateway).
func (f sessionFieldsOK) setGateway(s *discordgo.Session, gateway string) {
	s.Lock()
	defer s.Unlock()
	*(*string)(unsafe.Add(unsafe.Pointer(s), f.gateway)) = gateway
}

// gatewayURL is what discordgo dials for url: it adds the version and the
// encoding to what GET /gateway returns, as Open does.
func gatewayURL(url string) string {
	return url + "?v=" + discordgo.APIVersion + "&encoding=json"
}
