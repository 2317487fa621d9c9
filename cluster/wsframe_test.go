package cluster

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// encodeFrame builds one websocket frame, masked like a client's or plain
// like a server's.
func encodeFrame(opcode byte, payload []byte, mask bool) []byte {
	b := []byte{0x80 | opcode}
	m := byte(0)
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if mask {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		b = append(b, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(b, p...)
}

func TestFrameScannerAcrossSplits(t *testing.T) {
	frames := []struct {
		op      byte
		payload []byte
	}{
		{opText, []byte(`{"op":1,"d":42}`)},
		{opText, []byte(`{"op":2,"d":{"token":"x","intents":513}}`)},
		{opBinary, bytes.Repeat([]byte{7}, 300)},
		{opText, append([]byte(`{"op":6,"d":`), bytes.Repeat([]byte("x"), 70000)...)},
		{opClose, []byte{0x0f, 0xa4}}, // 4004
		{opText, []byte(`{}`)},
		{opClose, nil},
	}
	for _, mask := range []bool{true, false} {
		var stream []byte
		for _, f := range frames {
			stream = append(stream, encodeFrame(f.op, f.payload, mask)...)
		}
		for trial := range 200 {
			var s frameScanner
			var got []frameStart
			rest := stream
			for len(rest) > 0 {
				n := 1 + rand.IntN(min(len(rest), 1+trial%40))
				for _, fs := range s.scan(rest[:n]) {
					if fs.complete {
						got = append(got, fs)
					}
				}
				rest = rest[n:]
			}
			if len(got) != len(frames) {
				t.Fatalf("mask=%v trial %d: %d complete frames, want %d", mask, trial, len(got), len(frames))
			}
			for i, f := range frames {
				want := f.payload[:min(len(f.payload), prefixLen)]
				if got[i].opcode != f.op || !bytes.Equal(got[i].prefix, want) {
					t.Fatalf("mask=%v trial %d frame %d: %+v, want op %d prefix %q", mask, trial, i, got[i], f.op, want)
				}
			}
		}
	}
}

func TestFrameScannerSkipsTheHandshake(t *testing.T) {
	hs := "GET /gateway?v=9 HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: m0hpvg==\r\n\r\n"
	stream := append([]byte(hs), encodeFrame(opText, []byte(`{"op":2,"d":{}}`), true)...)
	for split := 1; split < len(stream); split++ {
		s := frameScanner{handshake: true}
		var got []frameStart
		for _, part := range [][]byte{stream[:split], stream[split:]} {
			for _, f := range s.scan(part) {
				if f.complete {
					got = append(got, f)
				}
			}
		}
		if len(got) != 1 || got[0].opcode != opText || string(got[0].prefix) != `{"op":2,` {
			t.Fatalf("split at %d: %+v", split, got)
		}
	}
}

func TestFrameScannerPartialPrefix(t *testing.T) {
	var s frameScanner
	f := encodeFrame(opText, []byte(`{"op":2,"d":{}}`), true)
	// Header and three payload bytes now, the rest later: the scanner says
	// what it has, marked incomplete.
	got := s.scan(f[:9])
	if len(got) != 1 || got[0].complete || string(got[0].prefix) != `{"o` {
		t.Fatalf("partial: %+v", got)
	}
	got = s.scan(f[9:])
	if len(got) != 1 || !got[0].complete || string(got[0].prefix) != `{"op":2,` {
		t.Fatalf("rest: %+v", got)
	}
}
