package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const value = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.SeCrEtVaLuE"

// leaks reports whether s shows any part of the token.
func leaks(s string) bool { return strings.Contains(s, "SeCrEtVaLuE") || strings.Contains(s, "SeCrEt") }

func TestTokenNeverPrints(t *testing.T) {
	tok, err := NewToken("Bot " + value + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Reveal() != value {
		t.Fatalf("Reveal() = %q", tok.Reveal())
	}
	var buf bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		fmt.Fprintf(&buf, verb+"\n", tok)
		fmt.Fprintf(&buf, verb+"\n", struct{ T Token }{tok})
		fmt.Fprintf(&buf, verb+"\n", &struct{ T *Token }{&tok})
	}
	j, _ := json.Marshal(map[string]any{"t": tok})
	buf.Write(j)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", tok, "group", slog.GroupValue(slog.Any("t", tok)))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "token", tok)
	if leaks(buf.String()) {
		t.Fatalf("token leaked:\n%s", buf.String())
	}
}

func TestNewTokenRejects(t *testing.T) {
	for _, in := range []string{"", "  \n", "Bot ", "abc def", "abc\x00def"} {
		if _, err := NewToken(in); err == nil {
			t.Errorf("NewToken(%q) accepted", in)
		} else if w := strings.TrimSpace(in); w != "" && strings.Contains(err.Error(), w) {
			t.Errorf("error %q repeats the input", err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "creds")
	os.Mkdir(creds, 0o700)
	os.WriteFile(filepath.Join(creds, CredentialName), []byte("cred-"+value), 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("SeCrEt"), 1000), 0o600)
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("two SeCrEt words"), 0o600)

	env := func(kv ...string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1], true
				}
			}
			return "", false
		}
	}
	for _, tc := range []struct {
		name    string
		file    string
		env     func(string) (string, bool)
		want    string
		source  Source
		wantErr string
	}{
		{name: "file wins", file: good, env: env("DISCORD_TOKEN", "other"), want: value, source: SourceFile},
		{name: "env", env: env("DISCORD_TOKEN", value, "CREDENTIALS_DIRECTORY", creds), want: value, source: SourceEnv},
		{name: "credential", env: env("CREDENTIALS_DIRECTORY", creds), want: "cred-" + value, source: SourceCredential},
		{name: "none", env: env(), wantErr: "DISCORD_TOKEN"},
		{name: "credentials dir without token", env: env("CREDENTIALS_DIRECTORY", dir), wantErr: "-token-file"},
		{name: "missing file", file: filepath.Join(dir, "nope"), env: env(), wantErr: "no such file"},
		{name: "big file", file: big, env: env(), wantErr: "not a token"},
		{name: "bad file", file: bad, env: env(), wantErr: "white space"},
		{name: "empty env is unset", env: env("DISCORD_TOKEN", ""), wantErr: "no Discord token"},
		{name: "empty env, then credential", env: env("DISCORD_TOKEN", "", "CREDENTIALS_DIRECTORY", creds), want: "cred-" + value, source: SourceCredential},
		{name: "blank env", env: env("DISCORD_TOKEN", " \n"), wantErr: "DISCORD_TOKEN: token is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, src, err := Load(tc.file, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				if leaks(err.Error()) {
					t.Fatalf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil || tok.Reveal() != tc.want || src != tc.source {
				t.Fatalf("Load = %v, %v, %v", tok.Reveal(), src, err)
			}
		})
	}
	if !errors.Is(func() error { _, _, e := Load("", env()); return e }(), ErrNoToken) {
		t.Fatal("missing token is not ErrNoToken")
	}
}
