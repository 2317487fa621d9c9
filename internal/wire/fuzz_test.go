package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the reader a supervisor runs on every
// child's channel. Whatever arrives, decoding must not panic, must not
// allocate beyond the frame limits, and what it accepts must survive a
// second round trip unchanged. Seeds: testdata/fuzz/FuzzDecode, plus one
// valid frame of each type.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages(f) {
		b, err := Encode(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := ReadFrame(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if len(p) > MaxPayload(typ) {
				t.Fatalf("%s payload of %d bytes passed the limit", typ, len(p))
			}
			m, err := Decode(typ, p)
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("decode error does not wrap ErrProtocol: %v", err)
				}
				continue
			}
			once, err := Encode(nil, m)
			if err != nil {
				t.Fatalf("re-encode accepted %s: %v", typ, err)
			}
			typ2, p2, err := ReadFrame(bytes.NewReader(once))
			if err != nil || typ2 != typ {
				t.Fatalf("re-read: %v %v", typ2, err)
			}
			m2, err := Decode(typ2, p2)
			if err != nil {
				t.Fatalf("second decode of %s: %v", typ, err)
			}
			twice, err := Encode(nil, m2)
			if err != nil || !bytes.Equal(once, twice) {
				t.Fatalf("%s changed on a second round trip:\n%q\n%q", typ, once, twice)
			}
		}
	})
}
