// Package secret holds the bot token so that it cannot leak by accident.
//
// A Token prints as "[redacted]" through fmt (every verb), slog and
// encoding/json; only Reveal gives the value, and the code that calls it is
// the code that must send the token somewhere (Discord, the child over its
// private socket).
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const redacted = "[redacted]"

// Token is a Discord bot token. The zero Token is empty.
type Token struct{ value string }

// NewToken returns the token for value after normalising it: surrounding
// white space and a leading "Bot " are dropped. The error never holds value.
func NewToken(value string) (Token, error) {
	v := strings.TrimSpace(value)
	v = strings.TrimSpace(strings.TrimPrefix(v+" ", "Bot "))
	if v == "" {
		return Token{}, errors.New("token is empty")
	}
	for _, r := range v {
		if r <= ' ' || r == 0x7f {
			return Token{}, errors.New("token contains white space or control characters")
		}
	}
	return Token{value: v}, nil
}

// Reveal returns the token's value.
func (t Token) Reveal() string { return t.value }

// Empty reports whether the token has no value.
func (t Token) Empty() bool { return t.value == "" }

// String implements fmt.Stringer without revealing the token.
func (t Token) String() string { return redacted }

// GoString implements fmt.GoStringer without revealing the token.
func (t Token) GoString() string { return redacted }

// Format implements fmt.Formatter so that no verb, not even %x, reveals the token.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (t Token) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler without revealing the token.
func (t Token) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler without revealing the token.
func (t Token) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Source says where a token was found.
type Source string

// The places a token is looked for, in order.
const (
	SourceFile       Source = "token file"
	SourceEnv        Source = "DISCORD_TOKEN"
	SourceCredential Source = "systemd credential"
)

// CredentialName is the name of the systemd credential holding the token
// (LoadCredential=discord-token:/path).
const CredentialName = "discord-token"

// ErrNoToken is returned by Load when no token was given in any of the three ways.
var ErrNoToken = errors.New("no Discord token: set DISCORD_TOKEN, pass -token-file PATH, " +
	"or run under systemd with LoadCredential=" + CredentialName + ":PATH")

// Load finds the token: the file named by tokenFile if not empty, else the
// DISCORD_TOKEN variable (if not empty), else
// $CREDENTIALS_DIRECTORY/discord-token.
// getenv is os.LookupEnv in production. Errors name the place that was
// wrong, never the token.
func Load(tokenFile string, getenv func(string) (string, bool)) (Token, Source, error) {
	if tokenFile != "" {
		t, err := readFile(tokenFile)
		return t, SourceFile, err
	}
	if v, ok := getenv("DISCORD_TOKEN"); ok && v != "" { // empty counts as unset, as compose's ${DISCORD_TOKEN} leaves it
		t, err := NewToken(v)
		if err != nil {
			return Token{}, SourceEnv, fmt.Errorf("read DISCORD_TOKEN: %w", err)
		}
		return t, SourceEnv, nil
	}
	if dir, ok := getenv("CREDENTIALS_DIRECTORY"); ok && dir != "" {
		p := filepath.Join(dir, CredentialName)
		if _, err := os.Stat(p); err == nil {
			t, err := readFile(p)
			return t, SourceCredential, err
		}
	}
	return Token{}, "", ErrNoToken
}

// maxTokenFile bounds what is read from a token file: tokens are ~72 bytes,
// so anything much larger is the wrong file.
const maxTokenFile = 4096

func readFile(path string) (Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return Token{}, fmt.Errorf("read token file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, maxTokenFile+1)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return Token{}, fmt.Errorf("read token file %s: %w", path, err)
	}
	if n > maxTokenFile {
		return Token{}, fmt.Errorf("read token file %s: larger than %d bytes, not a token", path, maxTokenFile)
	}
	t, err := NewToken(string(buf[:n]))
	if err != nil {
		return Token{}, fmt.Errorf("read token file %s: %w", path, err)
	}
	return t, nil
}
