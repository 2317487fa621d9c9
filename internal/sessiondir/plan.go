package sessiondir

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/shardvisor/shardvisor/internal/wire"
)

// The plan record, version 1, is one JSON object in PlanFile:
//
//	{"version": 1, "shard_count": 16, "shards_per_cluster": 4, "clusters": 0,
//	 "user_id": "111", "written": "2026-12-03T08:00:00Z",
//	 "reason": "reshard 8 -> 16 (ctl)", "mac": "<hex>"}
//
// mac is HMAC-SHA256, under a key derived from the token with its own HKDF
// info (not the session records' key), of the canonical bytes of the rest:
// the fields above but mac, in that order, in compact JSON without HTML
// escapes and with a final newline. So the file may be re-indented, but any
// change of a value breaks the mac.
const (
	// PlanFile is the plan record's name in the directory.
	PlanFile = "plan.json"
	// MaxPlanReason bounds a plan's Reason, in bytes.
	MaxPlanReason = 1 << 10

	planVersion = 1
	planKeyInfo = "shardvisor plan record v1"
	planTemp    = ".plan-"
	maxPlanFile = 16 << 10
)

// Plan is the shard plan a reshard moved to, remembered so that the next
// start uses it rather than the flags it was started with. Exactly one of
// ShardsPerCluster and Clusters is non-zero: how the shards are split into
// clusters (as supervisor.PlanConfig has them).
type Plan struct {
	ShardCount       int
	ShardsPerCluster int
	Clusters         int
	// UserID is the bot's user id; WritePlan fills in the Dir's when it
	// is empty.
	UserID string
	// Written is when the plan was adopted.
	Written time.Time
	// Reason is free text for the operator, e.g. "reshard 8 -> 16 (ctl)".
	// It is stored in the clear: nothing secret goes there.
	Reason string
}

// planBody is the plan as it is stored and authenticated, mac aside.
type planBody struct {
	Version          int       `json:"version"`
	ShardCount       int       `json:"shard_count"`
	ShardsPerCluster int       `json:"shards_per_cluster"`
	Clusters         int       `json:"clusters"`
	UserID           string    `json:"user_id"`
	Written          time.Time `json:"written"`
	Reason           string    `json:"reason"`
}

type planFile struct {
	planBody
	MAC string `json:"mac"`
}

func planKey(token string) ([]byte, error) {
	return hkdf.Key(sha256.New, []byte(token), nil, planKeyInfo, sha256.Size)
}

func (d *Dir) planName() string { return filepath.Join(d.path, PlanFile) }

// marshal is v in JSON, indented or compact, with "->" and the like left
// as they are for the operator to read.
func marshal(v any, indent string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	enc.Encode(v) // of ints, strings and a time in range: it cannot fail
	return buf.Bytes()
}

// mac authenticates the canonical bytes of b.
func (d *Dir) mac(b planBody) []byte {
	m := hmac.New(sha256.New, d.planKey)
	m.Write(marshal(b, ""))
	return m.Sum(nil)
}

// encodePlan is the file of b, whatever b holds.
func (d *Dir) encodePlan(b planBody) []byte {
	return marshal(planFile{planBody: b, MAC: hex.EncodeToString(d.mac(b))}, "  ")
}

// check says what is wrong with p for this Dir, or "".
func (d *Dir) check(p Plan) string {
	switch {
	case p.ShardCount < 1 || p.ShardCount > wire.MaxShardID:
		return fmt.Sprintf("shard count %d, must be between 1 and %d", p.ShardCount, wire.MaxShardID)
	case (p.ShardsPerCluster == 0) == (p.Clusters == 0):
		return fmt.Sprintf("shards per cluster %d and clusters %d: exactly one must be set", p.ShardsPerCluster, p.Clusters)
	case p.ShardsPerCluster < 0 || p.ShardsPerCluster > wire.MaxShardID:
		return fmt.Sprintf("shards per cluster %d, must be between 1 and %d", p.ShardsPerCluster, wire.MaxShardID)
	case p.Clusters < 0 || p.Clusters > p.ShardCount:
		return fmt.Sprintf("%d clusters for %d shards, must be between 1 and the shard count", p.Clusters, p.ShardCount)
	case p.UserID != d.bind.UserID:
		return fmt.Sprintf("written for another bot (user %s, this is %s)", p.UserID, d.bind.UserID)
	case p.Written.IsZero():
		return "no time written"
	case p.Written.Year() > 9999:
		return fmt.Sprintf("written in the year %d", p.Written.Year())
	case len(p.Reason) > MaxPlanReason:
		return fmt.Sprintf("reason of %d bytes, at most %d", len(p.Reason), MaxPlanReason)
	}
	return ""
}

// WritePlan stores p as the directory's plan record (PlanFile), replacing
// any older one. The file is plain JSON, readable by the operator, and
// authenticated with an HMAC under a key derived from the token: ReadPlan
// refuses it under another token or once a value is edited. It is written
// 0600 to a temporary name, synced and renamed (then the directory is
// synced, at best effort), so a crash leaves the old plan or the new one,
// never half of one. p must pass the checks ReadPlan makes; its Written is
// kept in UTC, to the nanosecond.
func (d *Dir) WritePlan(p Plan) error {
	if p.UserID == "" {
		p.UserID = d.bind.UserID
	}
	if what := d.check(p); what != "" {
		return fmt.Errorf("write plan %s: %s", d.planName(), what)
	}
	b := d.encodePlan(planBody{Version: planVersion, ShardCount: p.ShardCount, ShardsPerCluster: p.ShardsPerCluster,
		Clusters: p.Clusters, UserID: p.UserID, Written: p.Written.UTC(), Reason: p.Reason})
	if err := writeAtomic(d.path, planTemp+"*.tmp", d.planName(), b); err != nil {
		return fmt.Errorf("write plan %s: %w", d.planName(), err)
	}
	if dir, err := os.Open(d.path); err == nil {
		dir.Sync() // the rename outlives a power loss; some file systems cannot say
		dir.Close()
	}
	return nil
}

// ReadPlan returns the directory's plan record. It returns false and no
// error when there is none. Otherwise it returns an error, naming the file
// and what is wrong, when the file cannot be read, is not a plan record of
// this version, its mac does not verify (written for another bot token, or
// edited), it was written for another bot user id than the Dir's, or its
// values are out of range (see Plan; Reason at most MaxPlanReason bytes).
// The caller is to log such an error and fall back to its flags: the file
// is left in place for the operator to look at, and WritePlan or
// RemovePlan replaces it. A true result is a plan as WritePlan was given
// it; its shape (the size of a cluster) is still for supervisor.NewPlan to
// check.
//
// ReadPlan does not depend on the Dir's shard count: a caller that learns
// the shard count from the plan may Open with the flags' count, read the
// plan, and Open again with the plan's (before it calls Sweep).
func (d *Dir) ReadPlan() (Plan, bool, error) {
	name := d.planName()
	fail := func(format string, args ...any) (Plan, bool, error) {
		return Plan{}, false, fmt.Errorf("read plan %s: "+format, append([]any{name}, args...)...)
	}
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return Plan{}, false, nil
	}
	if err != nil {
		return fail("%w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxPlanFile+1))
	f.Close()
	switch {
	case err != nil:
		return fail("%w", err)
	case len(raw) > maxPlanFile:
		return fail("larger than %d bytes: not a plan record", maxPlanFile)
	}
	var pf planFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pf); err != nil {
		return fail("not a plan record: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("not a plan record: more than one JSON value")
	}
	if pf.Version != planVersion {
		return fail("version %d, this shardvisor reads version %d", pf.Version, planVersion)
	}
	mac, err := hex.DecodeString(pf.MAC)
	if err != nil || !hmac.Equal(mac, d.mac(pf.planBody)) {
		return fail("its mac does not verify: written for another bot token, or edited")
	}
	p := Plan{ShardCount: pf.ShardCount, ShardsPerCluster: pf.ShardsPerCluster, Clusters: pf.Clusters,
		UserID: pf.UserID, Written: pf.Written, Reason: pf.Reason}
	if what := d.check(p); what != "" {
		return fail("%s", what)
	}
	return p, true, nil
}

// RemovePlan removes the directory's plan record, if there is one: the
// next start follows its flags.
func (d *Dir) RemovePlan() error {
	if err := os.Remove(d.planName()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove plan %s: %w", d.planName(), err)
	}
	return nil
}
