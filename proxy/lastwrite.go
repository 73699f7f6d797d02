package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The last response on a connection that closes after it (#13): an
// HTTP/1.x request with "Connection: close" (what `edgeproxy bench --http`
// and many health checkers send) gets its response and then the server's
// close_notify, which crypto/tls writes as two records in two write calls.
// Once the handler has returned, what is left to write on such a connection
// is the tail of the response (net/http's buffers, at most a few KiB) and
// close_notify, so the connection holds those writes and Close sends them in
// one: one write system call and one wake-up of the client per connection
// instead of two (a write cost a resumed TLS 1.2 GET about 2.5% of the
// server's CPU).

// heldFlushTimeout bounds the write of what a connection held, at Close; it
// is crypto/tls's bound on writing close_notify.
const heldFlushTimeout = 5 * time.Second

// maxHeld bounds what a connection holds: a larger write goes out at once,
// after what was held, and the connection stops holding.
const maxHeld = 16 << 10

// heldBufs recycles the buffers of held writes.
var heldBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// lastWrites is the part of limitedConn that holds the writes after the last
// response.
type lastWrites struct {
	// holding is set while writes are held; mu is taken only then.
	holding atomic.Bool
	// mu protects held and closed: the connection's goroutine writes, and
	// Server.Shutdown may close the connection from another.
	mu     sync.Mutex
	held   *[]byte // from heldBufs; nil until the first held write
	closed bool    // Close ran: nothing is held any more
}

// holdLastResponse makes the connection of r, if r is an HTTP/1.x request
// after which net/http closes it (Connection: close, or HTTP/1.0 without
// keep-alive) and which had no body, hold its writes from now on until it
// closes. It is called after the handler returned: a request with a body
// may still make net/http half-close and linger (closeWriteAndWait), and
// one asking to upgrade may have been hijacked by the handler, so neither
// holds. wantsClose and noBody are r.Close and r.Body == http.NoBody read
// before the handler ran, which may replace r.Body.
func holdLastResponse(r *http.Request, wantsClose, noBody bool) {
	if !wantsClose || !noBody || r.ProtoMajor != 1 || r.Header.Get("Upgrade") != "" {
		return
	}
	lc := connOf(r.Context())
	if lc == nil {
		return
	}
	lc.w.mu.Lock()
	if !lc.w.closed {
		lc.w.holding.Store(true)
	}
	lc.w.mu.Unlock()
}

// Write writes b, or keeps it for Close while c holds its writes.
func (c *limitedConn) Write(b []byte) (int, error) {
	if !c.w.holding.Load() {
		return c.Conn.Write(b)
	}
	c.w.mu.Lock()
	if !c.w.holding.Load() { // closed meanwhile
		c.w.mu.Unlock()
		return c.Conn.Write(b)
	}
	if c.w.held == nil {
		c.w.held = heldBufs.Get().(*[]byte)
	}
	if len(*c.w.held)+len(b) <= maxHeld {
		*c.w.held = append(*c.w.held, b...)
		c.w.mu.Unlock()
		return len(b), nil
	}
	// Too much to hold: write what was held, then b, and stop holding.
	held := c.w.held
	c.w.held = nil
	c.w.holding.Store(false)
	c.w.mu.Unlock()
	err := writeHeld(c.Conn, held)
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// SetWriteDeadline sets the write deadline, unless c holds its writes: the
// deadline then is Close's (heldFlushTimeout). crypto/tls sets one around
// close_notify, and ends it at once after writing it.
func (c *limitedConn) SetWriteDeadline(t time.Time) error {
	if c.w.holding.Load() {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets the read deadline, and the write deadline as
// SetWriteDeadline does.
func (c *limitedConn) SetDeadline(t time.Time) error {
	if c.w.holding.Load() {
		return c.Conn.SetReadDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// closeWrites stops holding writes and writes what was held, in one write
// bounded by heldFlushTimeout. The write is made outside c.w.mu, so that a
// second Close (Server.Shutdown's) closes the socket under a blocked one.
func (c *limitedConn) closeWrites() error {
	c.w.mu.Lock()
	held := c.w.held
	c.w.held, c.w.closed = nil, true
	c.w.holding.Store(false)
	c.w.mu.Unlock()
	if held == nil {
		return nil
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(heldFlushTimeout))
	return writeHeld(c.Conn, held)
}

// writeHeld writes b to c in one call and recycles it.
func writeHeld(c net.Conn, b *[]byte) error {
	var err error
	if len(*b) > 0 {
		_, err = c.Write(*b)
	}
	*b = (*b)[:0]
	heldBufs.Put(b)
	return err
}

// connOf returns the admitted connection a request arrived on, or nil.
func connOf(ctx context.Context) *limitedConn {
	tc, _ := ctx.Value(connKey{}).(*tls.Conn)
	if tc == nil {
		return nil
	}
	return limitedOf(tc.NetConn())
}
