package wire

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSeedCorpus regenerates the valid-frame seeds in
// testdata/fuzz/FuzzDecode when run with SHARDVISOR_WRITE_SEEDS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("SHARDVISOR_WRITE_SEEDS") == "" {
		t.Skip("set SHARDVISOR_WRITE_SEEDS=1 to rewrite the seed corpus")
	}
	var all []byte
	for _, m := range sampleMessages(t) {
		b, err := Encode(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
		writeSeed(t, "valid-"+m.Type().String(), b)
	}
	writeSeed(t, "valid-stream", all)
	writeSeed(t, "flood-of-requests", repeatFrame(t, &IdentifyRequest{Shard: 1, Seq: 1}, 200))
}

func repeatFrame(t *testing.T, m Message, n int) []byte {
	b, err := Encode(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for range n {
		out = append(out, b...)
	}
	return out
}

func writeSeed(t *testing.T, name string, b []byte) {
	p := filepath.Join("testdata", "fuzz", "FuzzDecode", name)
	if err := os.WriteFile(p, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
		t.Fatal(err)
	}
}
