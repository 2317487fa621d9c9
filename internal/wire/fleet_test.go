package wire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// fleetSamples is one valid fleet message of each type (and kind of target).
func fleetSamples() []Message {
	return []Message{
		&FleetCall{ID: 1, Name: "guild-count", To: ToAll, Timeout: 2 * time.Second},
		&FleetCall{ID: 2, Name: "shardvisor.guild", To: ToGuild, Guild: 81384788765712384, Timeout: time.Second, Data: json.RawMessage(`{"guild_id":"81384788765712384"}`)},
		&FleetCall{ID: 3, Name: "x", To: ToCluster, Cluster: 2, Timeout: time.Second, Data: json.RawMessage(`[1,2]`)},
		&FleetRequest{ID: 77, Name: "guild-count", Timeout: 1500 * time.Millisecond},
		&FleetReply{ID: 77, Data: json.RawMessage(`42`)},
		&FleetReply{ID: 78, Code: FleetPanic, Error: "handler panicked: boom"},
		&FleetAnswer{ID: 1, Cluster: 3, Of: 8, Data: json.RawMessage(`{"guilds":42}`)},
		&FleetAnswer{ID: 1, Cluster: -1, Code: FleetBusy, Error: "too many calls in flight"},
	}
}

func TestFleetValidateRejects(t *testing.T) {
	big := json.RawMessage(`"` + strings.Repeat("a", MaxFleetAnswerData) + `"`)
	for _, tc := range []struct {
		m    Message
		want string
	}{
		{&FleetCall{Name: "", To: ToAll, Timeout: time.Second}, "name of 0 bytes"},
		{&FleetCall{Name: strings.Repeat("a", MaxFleetName+1), To: ToAll, Timeout: time.Second}, "name of 101 bytes"},
		{&FleetCall{Name: "a b", To: ToAll, Timeout: time.Second}, "not allowed"},
		{&FleetCall{Name: "a", To: ToAll}, "timeout 0s out of range"},
		{&FleetCall{Name: "a", To: ToAll, Timeout: 2 * MaxFleetTimeout}, "out of range"},
		{&FleetCall{Name: "a", To: "nowhere", Timeout: time.Second}, `fleet call to "nowhere"`},
		{&FleetCall{Name: "a", To: ToCluster, Cluster: -1, Timeout: time.Second}, "to cluster -1"},
		{&FleetCall{Name: "a", To: ToGuild, Timeout: time.Second}, "to guild 0"},
		{&FleetCall{Name: "a", To: ToAll, Cluster: 3, Timeout: time.Second}, "broadcast naming cluster 3"},
		{&FleetCall{Name: "a", To: ToAll, Timeout: time.Second, Data: big[:MaxFleetRequestData+1]}, "exceeds the limit"},
		{&FleetRequest{Name: "a", Timeout: -time.Second}, "out of range"},
		{&FleetReply{Code: "weird"}, `unknown fleet code "weird"`},
		{&FleetReply{Error: "oops"}, "error text but no code"},
		{&FleetReply{Code: FleetError, Error: "x", Data: json.RawMessage(`1`)}, "code \"error\" and data"},
		{&FleetReply{Code: FleetError, Error: strings.Repeat("e", 2000)}, "error text of 2000 bytes"},
		{&FleetReply{Data: big}, "exceeds the limit"},
		{&FleetAnswer{Cluster: -1}, "refusal without a code"},
		{&FleetAnswer{Cluster: -2, Code: FleetBusy}, "from cluster -2"},
		{&FleetAnswer{Cluster: 1, Of: -1}, "of -1"},
	} {
		err := tc.m.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: Validate() = %v, want it to contain %q", tc.m.Type(), tc.m, err, tc.want)
		}
	}
}

// TestFleetFrameLimits: the largest request and answer the limits allow
// fit their frames, with the longest name and error text.
func TestFleetFrameLimits(t *testing.T) {
	data := json.RawMessage(`"` + strings.Repeat("a", MaxFleetRequestData-2) + `"`)
	name := strings.Repeat("n", MaxFleetName)
	for _, m := range []Message{
		&FleetCall{ID: ^uint64(0), Name: name, To: ToCluster, Cluster: MaxShardID, Timeout: MaxFleetTimeout, Data: data},
		&FleetRequest{ID: ^uint64(0), Name: name, Timeout: MaxFleetTimeout, Data: data},
		&FleetReply{ID: ^uint64(0), Data: json.RawMessage(`"` + strings.Repeat("a", MaxFleetAnswerData-2) + `"`)},
		&FleetAnswer{ID: ^uint64(0), Cluster: MaxShardID, Of: MaxShardID, Data: json.RawMessage(`"` + strings.Repeat("a", MaxFleetAnswerData-2) + `"`)},
		&FleetAnswer{ID: ^uint64(0), Cluster: -1, Code: FleetBadRequest, Error: strings.Repeat("\u2028", maxText/3)},
	} {
		b, err := Encode(nil, m)
		if err != nil {
			t.Fatalf("Encode(%s) at the limits: %v", m.Type(), err)
		}
		typ, p, err := ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(typ, p); err != nil {
			t.Fatalf("Decode(%s) at the limits: %v", typ, err)
		}
	}
}
