package field

import (
	"errors"
	"fmt"
	"testing"
)

func TestRename(t *testing.T) {
	flags := map[string]string{"Clusters": "-clusters", "ShardsPerCluster": "-shards-per-cluster"}
	name := func(f string) string {
		if n, ok := flags[f]; ok {
			return n
		}
		return f
	}
	err := fmt.Errorf("plan: %w", New("Clusters", "both set with ShardsPerCluster: give one of them", "ShardsPerCluster"))
	if got, ok := Rename(err, name); !ok || got != "-clusters: both set with -shards-per-cluster: give one of them" {
		t.Errorf("Rename = %q, %v", got, ok)
	}
	if got, ok := Rename(New("Jitter", "0.5 too much"), name); !ok || got != "Jitter: 0.5 too much" {
		t.Errorf("a field without a flag: %q, %v", got, ok)
	}
	if got, ok := Rename(errors.New("plain"), name); ok || got != "plain" {
		t.Errorf("a plain error: %q, %v", got, ok)
	}
}
