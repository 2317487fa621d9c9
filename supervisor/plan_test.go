package supervisor

import (
	"reflect"
	"strings"
	"testing"

	"github.com/shardvisor/shardvisor/internal/wire"
)

func TestNewPlan(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     PlanConfig
		want    [][]int // shards per cluster run
		ids     []int   // cluster ids run
		total   int
		wantErr string
	}{
		{name: "per cluster exact", cfg: PlanConfig{Shards: 10, ShardsPerCluster: 5},
			want: [][]int{{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}}, ids: []int{0, 1}, total: 2},
		{name: "per cluster remainder", cfg: PlanConfig{Shards: 7, ShardsPerCluster: 3},
			want: [][]int{{0, 1, 2}, {3, 4, 5}, {6}}, ids: []int{0, 1, 2}, total: 3},
		{name: "one shard", cfg: PlanConfig{Shards: 1, ShardsPerCluster: 5},
			want: [][]int{{0}}, ids: []int{0}, total: 1},
		{name: "clusters even", cfg: PlanConfig{Shards: 64, Clusters: 8},
			want: [][]int{{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}, {16, 17, 18, 19, 20, 21, 22, 23},
				{24, 25, 26, 27, 28, 29, 30, 31}, {32, 33, 34, 35, 36, 37, 38, 39}, {40, 41, 42, 43, 44, 45, 46, 47},
				{48, 49, 50, 51, 52, 53, 54, 55}, {56, 57, 58, 59, 60, 61, 62, 63}}, ids: []int{0, 1, 2, 3, 4, 5, 6, 7}, total: 8},
		{name: "clusters uneven", cfg: PlanConfig{Shards: 10, Clusters: 3},
			want: [][]int{{0, 1, 2, 3}, {4, 5, 6}, {7, 8, 9}}, ids: []int{0, 1, 2}, total: 3},
		{name: "clusters equal shards", cfg: PlanConfig{Shards: 3, Clusters: 3},
			want: [][]int{{0}, {1}, {2}}, ids: []int{0, 1, 2}, total: 3},
		{name: "cluster ids", cfg: PlanConfig{Shards: 20, ShardsPerCluster: 5, ClusterIDs: []int{3, 1}},
			want: [][]int{{5, 6, 7, 8, 9}, {15, 16, 17, 18, 19}}, ids: []int{1, 3}, total: 4},
		{name: "share first of three", cfg: PlanConfig{Shards: 16, ShardsPerCluster: 2, Share: Share{0, 3}},
			want: [][]int{{0, 1}, {2, 3}}, ids: []int{0, 1}, total: 8},
		{name: "share last of three", cfg: PlanConfig{Shards: 16, ShardsPerCluster: 2, Share: Share{2, 3}},
			want: [][]int{{10, 11}, {12, 13}, {14, 15}}, ids: []int{5, 6, 7}, total: 8},
		{name: "share of one", cfg: PlanConfig{Shards: 4, ShardsPerCluster: 2, Share: Share{0, 1}},
			want: [][]int{{0, 1}, {2, 3}}, ids: []int{0, 1}, total: 2},
		{name: "more shares than clusters", cfg: PlanConfig{Shards: 4, ShardsPerCluster: 2, Share: Share{0, 3}}, wantErr: "PlanConfig.Share: 0/3"},
		{name: "share and ids", cfg: PlanConfig{Shards: 4, ShardsPerCluster: 2, Share: Share{0, 2}, ClusterIDs: []int{1}}, wantErr: "both set"},
		{name: "zero shards", cfg: PlanConfig{Shards: 0, ShardsPerCluster: 5}, wantErr: "PlanConfig.Shards"},
		{name: "negative shards", cfg: PlanConfig{Shards: -4, ShardsPerCluster: 5}, wantErr: "PlanConfig.Shards"},
		{name: "more clusters than shards", cfg: PlanConfig{Shards: 4, Clusters: 5}, wantErr: "PlanConfig.Clusters: 5 clusters for 4 shards"},
		{name: "both", cfg: PlanConfig{Shards: 4, Clusters: 2, ShardsPerCluster: 2}, wantErr: "both set"},
		{name: "neither", cfg: PlanConfig{Shards: 4}, wantErr: "PlanConfig.ShardsPerCluster"},
		{name: "negative clusters", cfg: PlanConfig{Shards: 4, Clusters: -1}, wantErr: "PlanConfig.Clusters"},
		{name: "id out of range", cfg: PlanConfig{Shards: 10, ShardsPerCluster: 5, ClusterIDs: []int{2}}, wantErr: "PlanConfig.ClusterIDs: cluster 2 is not in the plan (clusters 0-1"},
		{name: "id negative", cfg: PlanConfig{Shards: 10, ShardsPerCluster: 5, ClusterIDs: []int{-1}}, wantErr: "PlanConfig.ClusterIDs"},
		{name: "id twice", cfg: PlanConfig{Shards: 10, ShardsPerCluster: 5, ClusterIDs: []int{1, 1}}, wantErr: "listed twice"},
		{name: "ids empty", cfg: PlanConfig{Shards: 10, ShardsPerCluster: 5, ClusterIDs: []int{}}, wantErr: "empty"},
		{name: "too many shards", cfg: PlanConfig{Shards: wire.MaxShardID + 1, ShardsPerCluster: 5}, wantErr: "PlanConfig.Shards"},
		{name: "cluster too large", cfg: PlanConfig{Shards: wire.MaxShardsInMsg + 1, ShardsPerCluster: wire.MaxShardsInMsg + 1}, wantErr: "PlanConfig.ShardsPerCluster: 4097 shards in one cluster"},
		{name: "clusters too large", cfg: PlanConfig{Shards: 3*wire.MaxShardsInMsg + 1, Clusters: 3}, wantErr: "PlanConfig.Clusters: 4097 shards in one cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPlan(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got [][]int
			var ids []int
			for _, c := range p.Clusters {
				got = append(got, c.Shards)
				ids = append(ids, c.ID)
			}
			if !reflect.DeepEqual(got, tc.want) || !reflect.DeepEqual(ids, tc.ids) || p.Total != tc.total || p.ShardCount != tc.cfg.Shards {
				t.Fatalf("plan %+v\nwant shards %v ids %v total %d", p, tc.want, tc.ids, tc.total)
			}
		})
	}
}

func TestParseIDs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "2,3", want: []int{2, 3}},
		{in: " 0 , 7 ", want: []int{0, 7}},
		{in: "0-3,7", want: []int{0, 1, 2, 3, 7}},
		{in: "5", want: []int{5}},
		{in: "", wantErr: true},
		{in: "1,,2", wantErr: true},
		{in: "a", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "3-1", wantErr: true},
		{in: "1-x", wantErr: true},
		{in: "0-99999999", wantErr: true},
	} {
		got, err := ParseIDs("-cluster-ids", tc.in)
		if tc.wantErr != (err != nil) || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParseIDs(%q) = %v, %v", tc.in, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), "-cluster-ids") {
			t.Errorf("error %q does not name the flag", err)
		}
	}
	if s := FormatIDs([]int{15, 16, 17}); s != "15,16,17" {
		t.Errorf("FormatIDs = %q", s)
	}
}

func TestSharesCoverThePlanOnce(t *testing.T) {
	for clusters := 1; clusters <= 12; clusters++ {
		for n := 1; n <= clusters; n++ {
			seen := map[int]int{}
			for i := range n {
				p, err := NewPlan(PlanConfig{Shards: clusters, ShardsPerCluster: 1, Share: Share{i, n}})
				if err != nil || len(p.Clusters) == 0 {
					t.Fatalf("%d clusters, share %d/%d: %v %v", clusters, i, n, p.Clusters, err)
				}
				for _, c := range p.Clusters {
					seen[c.ID]++
				}
			}
			for id := range clusters {
				if seen[id] != 1 {
					t.Fatalf("%d clusters in %d shares: cluster %d run %d times", clusters, n, id, seen[id])
				}
			}
		}
	}
}

func TestParseShare(t *testing.T) {
	if s, err := ParseShare("-cluster-share", "2/4"); err != nil || s != (Share{2, 4}) {
		t.Fatalf("2/4: %v %v", s, err)
	}
	for _, bad := range []string{"", "2", "4/4", "-1/2", "a/b", "1/0"} {
		if _, err := ParseShare("-cluster-share", bad); err == nil || !strings.Contains(err.Error(), "-cluster-share") {
			t.Errorf("ParseShare(%q) = %v", bad, err)
		}
	}
}
