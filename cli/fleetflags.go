package cli

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/supervisor"
)

// fleetFlags are the flags of fleet calls across machines.
type fleetFlags struct {
	peers      string
	secretFile string
}

// The fleet secret is given like the token: a file, the environment, or a
// systemd credential; never a flag's value, which argv would show.
const (
	fleetSecretEnv        = envPrefix + "_FLEET_SECRET"
	fleetSecretCredential = "fleet-secret"
	maxFleetSecretFile    = 4096
)

func (f *fleetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.peers, "fleet-peers", "", "the other supervisors of this bot (several machines), as host:port of their -metrics-addr, comma-separated; a name with several addresses (a StatefulSet's headless service) is every one of them. Fleet calls for clusters they run are forwarded there")
	fs.StringVar(&f.secretFile, "fleet-secret-file", "", "file holding the secret peers share for fleet calls (else "+fleetSecretEnv+", else systemd's $CREDENTIALS_DIRECTORY/"+fleetSecretCredential+"); without one, forwarded calls are refused")
}

// load returns the peers (nil: none) and the fleet secret (empty: none).
func (f *fleetFlags) load(getenv func(string) (string, bool)) (*supervisor.Peers, secret.Token, error) {
	tok, err := f.secret(getenv)
	if err != nil {
		return nil, tok, configError(err)
	}
	if f.peers == "" {
		return nil, tok, nil
	}
	p := &supervisor.Peers{Secret: tok}
	for a := range strings.SplitSeq(f.peers, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, tok, configError(fmt.Errorf("-fleet-peers: %q: want host:port", a))
		}
		p.Addrs = append(p.Addrs, a)
	}
	if tok.Empty() {
		return nil, tok, configError(errors.New("-fleet-peers needs the fleet secret: -fleet-secret-file, " + fleetSecretEnv + " or the systemd credential " + fleetSecretCredential))
	}
	return p, tok, nil
}

func (f *fleetFlags) secret(getenv func(string) (string, bool)) (secret.Token, error) {
	path := f.secretFile
	if path == "" {
		if v, ok := getenv(fleetSecretEnv); ok && v != "" {
			t, err := secret.NewToken(v)
			if err != nil {
				return t, fmt.Errorf("read %s: %w", fleetSecretEnv, err)
			}
			return t, nil
		}
		if dir, ok := getenv("CREDENTIALS_DIRECTORY"); ok && dir != "" {
			if _, err := os.Stat(filepath.Join(dir, fleetSecretCredential)); err == nil {
				path = filepath.Join(dir, fleetSecretCredential)
			}
		}
	}
	if path == "" {
		return secret.Token{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return secret.Token{}, fmt.Errorf("read fleet secret: %w", err)
	}
	if len(b) > maxFleetSecretFile {
		return secret.Token{}, fmt.Errorf("read fleet secret %s: larger than %d bytes", path, maxFleetSecretFile)
	}
	t, err := secret.NewToken(string(b))
	if err != nil {
		return t, fmt.Errorf("read fleet secret %s: %w", path, err)
	}
	return t, nil
}
