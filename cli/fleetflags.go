package cli

import (
	"errors"
	"flag"
	"fmt"
	"net"
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
	t, _, err := secret.Find(secret.Places{File: f.secretFile, Env: fleetSecretEnv, Credential: fleetSecretCredential, What: "fleet secret"}, getenv)
	if errors.Is(err, secret.ErrNotFound) {
		return secret.Token{}, nil // without one, forwarded calls are refused
	}
	return t, err
}
