// Package field is how shardvisor's libraries say which of their settings
// is wrong: by the name of the Go field, which a command line turns into its
// own flag's name (cli keeps that table). A library thus never spells a
// flag, and a flag renamed in cli cannot leave a library's message stale.
package field

import (
	"errors"
	"strings"
)

// Error is an error about the setting Field. Its message may name other
// settings (Others), spelled as their fields.
type Error struct {
	Field  string
	Others []string
	Msg    string
}

// New returns an *Error about field whose message is msg; others are
// the other fields msg names.
func New(field, msg string, others ...string) error {
	return &Error{Field: field, Others: others, Msg: msg}
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// Rename returns err's message with every field it names spelled by
// name(field); ok is false when err is not an *Error (msg is then
// err.Error()). A field name has no spelling of its own keeps it.
func Rename(err error, name func(field string) string) (msg string, ok bool) {
	var fe *Error
	if !errors.As(err, &fe) {
		return err.Error(), false
	}
	var pairs []string
	for _, o := range fe.Others {
		pairs = append(pairs, o, name(o))
	}
	body := fe.Msg
	if len(pairs) > 0 {
		body = strings.NewReplacer(pairs...).Replace(body)
	}
	return name(fe.Field) + ": " + body, true
}
