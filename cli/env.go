package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// lookupEnv is how a mode reads its environment: os.LookupEnv in
// production, the demo's own or a test's otherwise. Every read of a
// variable in cli goes through the one a mode was given (the flags'
// SHARDVISOR_* values, the token's DISCORD_TOKEN and CREDENTIALS_DIRECTORY,
// a cluster's identity and channel), so that a mode's environment is
// whatever its caller says it is.
type lookupEnv func(string) (string, bool)

// get is getenv's value, "" when unset.
func (e lookupEnv) get(k string) string {
	v, _ := e(k)
	return v
}

// envPrefix is the prefix of the environment variables that set flags.
const envPrefix = "SHARDVISOR"

// flagEnvVar is the variable that sets the flag name: SHARDVISOR_<NAME>
// with dashes as underscores (-shards-per-cluster:
// SHARDVISOR_SHARDS_PER_CLUSTER).
func flagEnvVar(name string) string {
	return envPrefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// parse parses args into fs, then fills the flags args left unset from
// their SHARDVISOR_* variables, read through getenv (an empty value counts
// as unset; flags win). Errors are configuration errors naming the flag.
func parse(fs *flag.FlagSet, args []string, getenv lookupEnv) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return err
		}
		return configError(err)
	}
	if fs.NArg() > 0 {
		return configError(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		key := flagEnvVar(f.Name)
		v := getenv.get(key)
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = configError(fmt.Errorf("-%s from %s: invalid value %q: %w", f.Name, key, v, e))
		}
	})
	return err
}

// withoutFlagVars is environ without the variables that would set one of
// fs's flags: the environment of a child whose settings come from its
// command line alone.
func withoutFlagVars(environ []string, fs *flag.FlagSet) []string {
	drop := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { drop[flagEnvVar(f.Name)] = true })
	var out []string
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); !drop[k] {
			out = append(out, kv)
		}
	}
	return out
}
