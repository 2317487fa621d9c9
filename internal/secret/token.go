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
	t, src, err := Find(Places{File: tokenFile, Env: "DISCORD_TOKEN", Credential: CredentialName, What: "token file"}, getenv)
	if errors.Is(err, ErrNotFound) {
		return t, src, ErrNoToken
	}
	return t, src, err
}

// Places are where a secret is looked for, in order: File if not empty,
// else the variable Env if set and not empty, else the systemd credential
// $CREDENTIALS_DIRECTORY/Credential. What names the file in errors.
type Places struct {
	File, Env, Credential, What string
}

// ErrNotFound is returned by Find when the secret is in none of its places.
var ErrNotFound = errors.New("secret not found")

// Find reads the secret from the first of its places that has it; the
// Source is SourceFile, the variable's name, or SourceCredential.
func Find(p Places, getenv func(string) (string, bool)) (Token, Source, error) {
	if p.File != "" {
		t, err := readFile(p.File, p.What)
		return t, SourceFile, err
	}
	if v, ok := getenv(p.Env); ok && v != "" { // empty counts as unset, as compose's ${VAR} leaves it
		t, err := NewToken(v)
		if err != nil {
			return Token{}, Source(p.Env), fmt.Errorf("read %s: %w", p.Env, err)
		}
		return t, Source(p.Env), nil
	}
	if dir, ok := getenv("CREDENTIALS_DIRECTORY"); ok && dir != "" {
		path := filepath.Join(dir, p.Credential)
		if _, err := os.Stat(path); err == nil {
			t, err := readFile(path, p.What)
			return t, SourceCredential, err
		}
	}
	return Token{}, "", ErrNotFound
}

// maxTokenFile bounds what is read from a secret's file: tokens are ~72
// bytes, so anything much larger is the wrong file.
const maxTokenFile = 4096

func readFile(path, what string) (Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return Token{}, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	buf := make([]byte, maxTokenFile+1)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return Token{}, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if n > maxTokenFile {
		return Token{}, fmt.Errorf("read %s %s: larger than %d bytes, not a token", what, path, maxTokenFile)
	}
	t, err := NewToken(string(buf[:n]))
	if err != nil {
		return Token{}, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	return t, nil
}
