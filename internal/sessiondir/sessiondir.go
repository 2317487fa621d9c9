// Package sessiondir keeps the shards' sessions across a restart of the
// whole supervisor (-session-dir). On a stop, each shard's session (its
// id, last dispatched sequence number and resume URL) and its State
// snapshot are written to one record file; the next start takes each
// record once, and the shard RESUMEs instead of identifying.
//
// A record is as secret as the token, and must never be applied to
// another bot, another plan, or a tampered or stale file. So:
//   - its payload is sealed with AES-256-GCM under a key derived from the
//     token (HKDF-SHA256): a record of another token, or one changed by a
//     single bit, does not open;
//   - its header (in the clear, and bound to the payload as GCM's
//     additional data) names the shard, the shard count and the bot's user
//     id, and when it was written: a record of another plan or bot, or
//     older than the resume window, is discarded before it is opened;
//   - files are 0600, written to a temporary name, synced and renamed, so
//     a crash mid-write leaves no half record;
//   - a record is removed when it is taken, used or not: a session is
//     resumed at most once from its record.
//
// The directory also holds the plan record (plan.go, PlanFile): the shard
// count and cluster split a reshard moved to, so that the next start uses
// them rather than the flags. It is not secret, so it is plain JSON for the
// operator to read, but it is authenticated with an HMAC under a key of its
// own derived from the token, names the bot's user id, and is written like
// a record. It stays until it is replaced or removed; Sweep leaves it.
package sessiondir

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shardvisor/shardvisor/internal/secret"
	"github.com/shardvisor/shardvisor/internal/wire"
)

// Record format, version 1:
//
//	magic    "shardvisor-session\x01\n" (20 bytes)
//	uint32   header length, big endian
//	header   JSON: shard, shard_count, user_id, written (RFC 3339), payload bytes
//	nonce    12 bytes
//	sealed   AES-256-GCM(payload), additional data: everything before the nonce
//
// payload: uvarint length + session id, uvarint length + resume URL,
// int64 sequence number (big endian), then the snapshot.
const (
	magic     = "shardvisor-session\x01\n"
	maxHeader = 4 << 10
	suffix    = ".session"
	keyInfo   = "shardvisor session record v1"
	// maxRecord bounds a record file: the snapshot, the session, the header.
	maxRecord = wire.MaxSnapshot + 64<<10
)

// Why a record was not used: the reason label of the supervisor's
// discarded-records counter.
const (
	ReasonExpired = "expired" // older than the resume window
	ReasonForeign = "foreign" // another bot, another shard count, another shard
	ReasonCorrupt = "corrupt" // not a record, tampered, or sealed with another token
	ReasonIO      = "io"      // could not be read
)

// Binding is what a record must match: this bot and this plan.
type Binding struct {
	UserID     string // the bot's user id (GET users/@me)
	ShardCount int
	Token      secret.Token // the key of the seal is derived from it
}

// Dir is a session directory.
type Dir struct {
	path       string
	bind       Binding // its ShardCount is shardCount's first value
	shardCount atomic.Int64
	window     time.Duration
	aead       cipher.AEAD
	// planKey authenticates the plan record (plan.go).
	planKey []byte
}

// Rebind makes the records written and taken from now on those of a plan
// of shardCount shards: after a reshard's switch, a stop writes records
// of the new plan, and those of the old one are foreign.
func (d *Dir) Rebind(shardCount int) { d.shardCount.Store(int64(shardCount)) }

func (d *Dir) shards() int { return int(d.shardCount.Load()) }

// Open prepares path (created 0700 if missing) for records of b, taken
// when younger than window. It fails when path cannot hold records: not a
// directory, or not writable.
func Open(path string, b Binding, window time.Duration) (*Dir, error) {
	switch {
	case b.UserID == "":
		return nil, errors.New("open session dir: no bot user id")
	case b.ShardCount < 1:
		return nil, fmt.Errorf("open session dir: shard count %d", b.ShardCount)
	case b.Token.Empty():
		return nil, errors.New("open session dir: no token")
	case window <= 0:
		return nil, fmt.Errorf("open session dir: resume window %v, must be positive", window)
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("open session dir: %w", err)
	}
	probe, err := os.CreateTemp(path, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("open session dir: cannot write there: %w", err)
	}
	probe.Close()
	os.Remove(probe.Name())
	key, err := hkdf.Key(sha256.New, []byte(b.Token.Reveal()), nil, keyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("open session dir: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("open session dir: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("open session dir: %w", err)
	}
	pk, err := planKey(b.Token.Reveal())
	if err != nil {
		return nil, fmt.Errorf("open session dir: derive key: %w", err)
	}
	d := &Dir{path: path, bind: b, window: window, aead: aead, planKey: pk}
	d.shardCount.Store(int64(b.ShardCount))
	return d, nil
}

// Window is how old a record may be when it is taken.
func (d *Dir) Window() time.Duration { return d.window }

type header struct {
	Shard      int       `json:"shard"`
	ShardCount int       `json:"shard_count"`
	UserID     string    `json:"user_id"`
	Written    time.Time `json:"written"`
	Payload    int       `json:"payload"`
}

func (d *Dir) file(shard int) string {
	return filepath.Join(d.path, "shard-"+strconv.Itoa(shard)+suffix)
}

// Write stores h (a shard's session, with its whole snapshot) as the
// shard's record, replacing any older one. It returns the bytes written.
func (d *Dir) Write(h *wire.HandoffShard, now time.Time) (int, error) {
	if h.SessionID.Empty() {
		return 0, fmt.Errorf("write session record of shard %d: no session", h.Shard)
	}
	if h.Shard < 0 || h.Shard >= d.shards() {
		return 0, fmt.Errorf("write session record of shard %d: not a shard of %d", h.Shard, d.shards())
	}
	var p []byte
	p = binary.AppendUvarint(p, uint64(len(h.SessionID.Reveal())))
	p = append(p, h.SessionID.Reveal()...)
	p = binary.AppendUvarint(p, uint64(len(h.ResumeURL)))
	p = append(p, h.ResumeURL...)
	p = binary.BigEndian.AppendUint64(p, uint64(h.Seq))
	p = append(p, h.Snapshot...)

	hd, _ := json.Marshal(header{Shard: h.Shard, ShardCount: d.shards(), UserID: d.bind.UserID,
		Written: now.UTC(), Payload: len(p)})
	b := make([]byte, 0, len(magic)+4+len(hd)+d.aead.NonceSize()+len(p)+d.aead.Overhead())
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(hd)))
	b = append(b, hd...)
	ad := len(b)
	nonce := make([]byte, d.aead.NonceSize())
	rand.Read(nonce)
	b = append(b, nonce...)
	b = d.aead.Seal(b, nonce, p, b[:ad])
	clear(p)

	if err := writeAtomic(d.path, ".shard-"+strconv.Itoa(h.Shard)+"-*.tmp", d.file(h.Shard), b); err != nil {
		return 0, fmt.Errorf("write session record of shard %d: %w", h.Shard, err)
	}
	return len(b), nil
}

// writeAtomic writes b to name in dir through a temporary file of the
// pattern (0600, as os.CreateTemp makes it), synced and renamed: name
// holds its old content or b, never part of b.
func writeAtomic(dir, pattern, name string, b []byte) error {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, nothing is there
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	return err
}

// Has reports whether the shard has a record waiting, usable or not:
// Take decides.
func (d *Dir) Has(shard int) bool {
	_, err := os.Lstat(d.file(shard))
	return err == nil
}

// DiscardError says why a shard's record was not used.
type DiscardError struct {
	Shard  int
	Reason string // a Reason constant
	Detail string // what was wrong, without anything the record holds secret
}

func (e *DiscardError) Error() string {
	return fmt.Sprintf("session record of shard %d discarded (%s): %s", e.Shard, e.Reason, e.Detail)
}

// Take reads and removes the shard's record. It returns nil and no error
// when there is none, the session when the record is valid, or a
// *DiscardError saying why it was not.
func (d *Dir) Take(shard int, now time.Time) (*wire.HandoffShard, error) {
	name := d.file(shard)
	b, err := readBounded(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	os.Remove(name) // once, whatever it held
	if err != nil {
		return nil, &DiscardError{Shard: shard, Reason: ReasonIO, Detail: err.Error()}
	}
	h, err := d.open(shard, b, now)
	clear(b)
	return h, err
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxRecord {
		return nil, fmt.Errorf("larger than %d bytes", maxRecord)
	}
	return b, nil
}

// open checks and unseals one record.
func (d *Dir) open(shard int, b []byte, now time.Time) (*wire.HandoffShard, error) {
	discard := func(reason, format string, args ...any) error {
		return &DiscardError{Shard: shard, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if !bytes.HasPrefix(b, []byte(magic)) || len(b) < len(magic)+4 {
		return nil, discard(ReasonCorrupt, "not a session record")
	}
	n := int(binary.BigEndian.Uint32(b[len(magic):]))
	ad := len(magic) + 4 + n
	if n > maxHeader || len(b) < ad+d.aead.NonceSize()+d.aead.Overhead() {
		return nil, discard(ReasonCorrupt, "truncated")
	}
	var hd header
	if err := json.Unmarshal(b[len(magic)+4:ad], &hd); err != nil {
		return nil, discard(ReasonCorrupt, "unreadable header")
	}
	switch age := now.Sub(hd.Written); {
	case hd.Shard != shard:
		return nil, discard(ReasonForeign, "it is shard %d's", hd.Shard)
	case hd.ShardCount != d.shards():
		return nil, discard(ReasonForeign, "written for %d shards, the plan has %d", hd.ShardCount, d.shards())
	case hd.UserID != d.bind.UserID:
		return nil, discard(ReasonForeign, "written for another bot (user %s)", hd.UserID)
	case age > d.window:
		return nil, discard(ReasonExpired, "written %v ago, more than the resume window of %v", age.Round(time.Second), d.window)
	case age < -time.Minute:
		return nil, discard(ReasonCorrupt, "written %v in the future", (-age).Round(time.Second))
	}
	nonce := b[ad : ad+d.aead.NonceSize()]
	p, err := d.aead.Open(nil, nonce, b[ad+d.aead.NonceSize():], b[:ad])
	if err != nil {
		return nil, discard(ReasonCorrupt, "its seal does not open: tampered, or written with another token")
	}
	defer clear(p)
	h, err := decodePayload(shard, p)
	if err != nil {
		return nil, discard(ReasonCorrupt, "%v", err)
	}
	return h, nil
}

func decodePayload(shard int, p []byte) (*wire.HandoffShard, error) {
	field := func(what string) (string, error) {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return "", fmt.Errorf("payload: bad %s", what)
		}
		s := string(p[k : k+int(n)])
		p = p[k+int(n):]
		return s, nil
	}
	id, err := field("session id")
	if err != nil {
		return nil, err
	}
	url, err := field("resume url")
	if err != nil {
		return nil, err
	}
	if len(p) < 8 {
		return nil, errors.New("payload: no sequence number")
	}
	tok, err := secret.NewToken(id)
	if err != nil || tok.Reveal() != id {
		return nil, errors.New("payload: bad session id")
	}
	h := &wire.HandoffShard{Shard: shard, SessionID: tok, ResumeURL: url, Seq: int64(binary.BigEndian.Uint64(p))}
	if err := h.Validate(); err != nil { // before the snapshot: it is no chunk
		return nil, fmt.Errorf("payload: %w", err)
	}
	if rest := p[8:]; len(rest) > 0 {
		h.Snapshot = bytes.Clone(rest)
	}
	return h, nil
}

// Sweep removes what no shard of the plan will take: records of shards
// beyond the shard count and temporary files a crash left (of records and
// of the plan record). It returns the records removed. It never touches
// the plan record itself, nor any file it did not write.
func (d *Dir) Sweep() int {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if (strings.HasPrefix(name, ".shard-") || strings.HasPrefix(name, planTemp)) && strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(d.path, name))
			continue
		}
		id, ok := strings.CutPrefix(strings.TrimSuffix(name, suffix), "shard-")
		if !strings.HasSuffix(name, suffix) || !ok {
			continue
		}
		if s, err := strconv.Atoi(id); err == nil && (s < 0 || s >= d.shards()) {
			os.Remove(filepath.Join(d.path, name))
			n++
		}
	}
	return n
}
