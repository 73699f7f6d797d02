package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// errBodyTooLarge is the error a clientBody returns past its limit.
var errBodyTooLarge = errors.New("proxy: request body larger than the route's limits.max_body_bytes")

// clientBody wraps a request body on its way to the upstream. It enforces
// the route's body limits, records the first read error — which is the
// client's fault, whatever the transport makes of it — and whether any byte
// was read, which decides whether a failed attempt may be retried.
//
// The transport reads it on its own goroutine while the handler's goroutine
// looks at failed and read; those two are synchronised, the rest belongs to
// the reader.
type clientBody struct {
	rc    io.ReadCloser
	limit int64 // -1: none

	// The read deadline (mod_reqtimeout): start + timeout + n/minRate.
	ctl      *http.ResponseController // nil: no deadline
	start    time.Time
	timeout  time.Duration
	minRate  int64
	deadline time.Time // as last set on ctl

	n    int64       // bytes read so far
	read atomic.Bool // a Read was called: something may have been sent

	// mu protects err.
	mu  sync.Mutex
	err error // first read error other than io.EOF
}

// newClientBody wraps rc. ctl sets the connection's read deadline, which
// starts now; a nil ctl sets none.
func newClientBody(rc io.ReadCloser, l *RouteLimits, ctl *http.ResponseController, now time.Time) *clientBody {
	b := &clientBody{rc: rc, limit: l.maxBodyBytes(), ctl: ctl, start: now, timeout: l.bodyTimeout(), minRate: l.bodyMinRate()}
	if ctl != nil {
		b.deadline = now.Add(b.timeout)
		if ctl.SetReadDeadline(b.deadline) != nil {
			b.ctl = nil // the writer cannot: no deadline rather than a wrong one
		}
	}
	return b
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	if b.limit >= 0 && int64(len(p)) > b.limit-b.n+1 {
		// Read one byte past the limit at most, to tell "exactly at the
		// limit" from "over it".
		p = p[:b.limit-b.n+1]
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if b.limit >= 0 && b.n > b.limit {
		n -= int(b.n - b.limit)
		b.n = b.limit
		err = errBodyTooLarge
	}
	switch {
	case err == io.EOF:
		b.clearDeadline()
	case err != nil:
		// The deadline stays: what is left of this body is not worth
		// waiting for (clientError closes the connection).
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	case n > 0 && b.ctl != nil:
		// Extend once the earned time passes the deadline by a second,
		// not on every read.
		if d := b.start.Add(b.timeout + time.Duration(b.n/b.minRate)*time.Second); d.Sub(b.deadline) >= time.Second {
			b.deadline = d
			_ = b.ctl.SetReadDeadline(d)
		}
	}
	return n, err
}

// clearDeadline lifts the read deadline once the body is done, so it does not
// cut what the connection reads next (HTTP/1.1's check for a client gone
// away while the upstream answers).
func (b *clientBody) clearDeadline() {
	if b.ctl != nil {
		_ = b.ctl.SetReadDeadline(time.Time{})
		b.ctl = nil
	}
}

// failed returns the body's first read error other than io.EOF, or nil; nil
// for a request without a body (b nil).
func (b *clientBody) failed() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Close is held back until the body was read, so an unread body stays
// readable for a retry; forward closes the body it wrapped when
// ServeHTTP returns.
func (b *clientBody) Close() error {
	if b.read.Load() {
		return b.rc.Close()
	}
	return nil
}
