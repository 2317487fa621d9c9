package cluster

import "encoding/binary"

// frameScanner follows a websocket byte stream (RFC 6455, section 5.2) in
// one direction, across arbitrary splits, and reports the start of every
// frame with the first bytes of its payload, unmasked. It lets the gate see
// IDENTIFY and RESUME frames going out and close frames coming in without
// replacing the websocket library.
type frameScanner struct {
	// handshake is true until the HTTP upgrade request or response that
	// precedes the frames has gone by (up to its blank line).
	handshake bool
	crlf      int // how much of "\r\n\r\n" the handshake has ended with so far

	hdr     [14]byte
	hdrLen  int
	need    int // header bytes needed in all; 0 when reading payload
	left    uint64
	opcode  byte
	masked  bool
	key     [4]byte
	pos     uint64 // payload bytes seen of the current frame
	prefix  [prefixLen]byte
	have    int  // prefix bytes collected
	pending bool // a frame started whose prefix is not yet reported
}

const prefixLen = 8

// frameStart is a frame as seen by the scanner.
type frameStart struct {
	opcode byte
	// prefix is the payload's first bytes, unmasked: up to 8, fewer if the
	// frame is shorter or the rest has not arrived yet.
	prefix []byte
	// complete is false when the prefix may still grow (the rest of the
	// payload arrives in a later chunk).
	complete bool
}

// Websocket opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
)

// scan feeds p and returns the frames that started, or whose prefix
// completed, within it.
func (s *frameScanner) scan(p []byte) []frameStart {
	var out []frameStart
	for s.handshake && len(p) > 0 {
		const end = "\r\n\r\n"
		if p[0] == end[s.crlf] {
			s.crlf++
		} else if p[0] == '\r' {
			s.crlf = 1
		} else {
			s.crlf = 0
		}
		p = p[1:]
		if s.crlf == len(end) {
			s.handshake = false
		}
	}
	for len(p) > 0 {
		if s.left == 0 && s.need == 0 && !s.pending {
			s.need = 2
			s.hdrLen = 0
		}
		if s.need > 0 {
			n := copy(s.hdr[s.hdrLen:s.need], p)
			s.hdrLen += n
			p = p[n:]
			if s.hdrLen < s.need {
				return out
			}
			if s.hdrLen == 2 {
				s.need = 2 + extLen(s.hdr[1])
				if s.hdr[1]&0x80 != 0 {
					s.need += 4
				}
				if s.hdrLen < s.need {
					continue
				}
			}
			s.beginFrame()
			if s.left == 0 {
				out = append(out, s.report(true))
			}
			continue
		}
		n := uint64(len(p))
		if n > s.left {
			n = s.left
		}
		for i := uint64(0); i < n && s.have < prefixLen; i++ {
			b := p[i]
			if s.masked {
				b ^= s.key[(s.pos+i)%4]
			}
			s.prefix[s.have] = b
			s.have++
		}
		s.pos += n
		s.left -= n
		p = p[n:]
		if s.pending && (s.have == prefixLen || s.left == 0) {
			out = append(out, s.report(true))
		}
	}
	if s.pending && s.have > 0 {
		// The prefix may grow with the next chunk; say what there is now.
		out = append(out, frameStart{opcode: s.opcode, prefix: append([]byte(nil), s.prefix[:s.have]...)})
	}
	return out
}

func extLen(b1 byte) int {
	switch b1 & 0x7f {
	case 126:
		return 2
	case 127:
		return 8
	}
	return 0
}

func (s *frameScanner) beginFrame() {
	s.opcode = s.hdr[0] & 0x0f
	s.masked = s.hdr[1]&0x80 != 0
	l := uint64(s.hdr[1] & 0x7f)
	off := 2
	switch l {
	case 126:
		l = uint64(binary.BigEndian.Uint16(s.hdr[2:4]))
		off = 4
	case 127:
		l = binary.BigEndian.Uint64(s.hdr[2:10])
		off = 10
	}
	if s.masked {
		copy(s.key[:], s.hdr[off:off+4])
	}
	s.left, s.pos, s.have, s.need, s.pending = l, 0, 0, 0, true
}

func (s *frameScanner) report(complete bool) frameStart {
	s.pending = false
	return frameStart{opcode: s.opcode, prefix: append([]byte(nil), s.prefix[:s.have]...), complete: complete}
}
