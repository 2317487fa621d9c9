package wire

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"time"
)

// Conn sends and receives messages over one end of the channel. Read must be
// called from one goroutine at a time; Write is safe for concurrent use.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader

	wmu          sync.Mutex
	wbuf         []byte
	writeTimeout time.Duration
}

// NewConn wraps nc. A Write that cannot complete within writeTimeout fails
// (and leaves the channel unusable): a peer that stops reading cannot block
// the writer for longer than that. Zero means no timeout.
func NewConn(nc net.Conn, writeTimeout time.Duration) *Conn {
	return &Conn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), writeTimeout: writeTimeout}
}

// Read returns the next message. Errors that mean the peer broke the protocol
// wrap ErrProtocol; a peer that closed cleanly gives io.EOF.
func (c *Conn) Read() (Message, error) {
	t, p, err := ReadFrame(c.r)
	if err != nil {
		return nil, err
	}
	return Decode(t, p)
}

// Write sends m.
func (c *Conn) Write(m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := Encode(c.wbuf[:0], m)
	if err != nil {
		return err
	}
	if cap(b) <= 64<<10 {
		c.wbuf = b // keep small buffers for the next message
	}
	if c.writeTimeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", m.Type(), err)
	}
	return nil
}

// SetReadDeadline bounds the Reads to come.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Close closes the underlying connection; a blocked Read returns.
func (c *Conn) Close() error { return c.nc.Close() }
