package proxy

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// upstreamTransport carries a route's requests to its upstreams. Plain
// HTTP/1.1 requests to http upstreams go through a pool of persistent
// connections of its own (h1Pool), which reads each response on the
// request's goroutine: net/http's Transport spends two goroutines per
// connection and channel handoffs per request, which was half of a
// kept-alive request's CPU (issue #13). What that pool does not do is left
// to std, an *http.Transport with the same dialer, timeouts and limits: https
// upstreams, Upgrade requests (the 101 response's body is the connection)
// and Expect: 100-continue. Such connections are capped apart, by the same
// limits.
//
// It is safe for concurrent use.
type upstreamTransport struct {
	std *http.Transport
	cfg h1Config

	// mu protects pools, one per upstream host:port as the URL spells it.
	mu    sync.RWMutex
	pools map[string]*h1Pool
}

// h1Config is what every h1Pool of a transport shares.
type h1Config struct {
	dial              func(ctx context.Context, network, addr string) (net.Conn, error) // returns *DialError
	responseHeader    time.Duration
	idle              time.Duration
	maxConns, maxIdle int
	noKeepAlive       bool // a connection carries one request (PROXY protocol)
	// watching, if set (tests), is called when an exchange starts to
	// watch a cancelable context (upstream_h1_watch.go).
	watching func()
}

// maxResponseHeaderBytes bounds an upstream's response header, as
// http.Transport's default does.
const maxResponseHeaderBytes = 10 << 20

var (
	errUpstreamSwitched   = errors.New("proxy: upstream answered 101 Switching Protocols to a request without Upgrade")
	errResponseHeaderSize = fmt.Errorf("proxy: upstream response header larger than %d bytes", maxResponseHeaderBytes)
	errBodyClosed         = errors.New("proxy: read on closed upstream response body")
)

// RoundTrip implements http.RoundTripper. 1xx responses go to the
// request's httptrace.ClientTrace.Got1xxResponse.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req, nil)
}

// got1xxHandler takes a 1xx response, as httptrace.ClientTrace.Got1xxResponse
// does. forward's exchange is one: passed as an interface, a pointer, it
// costs no allocation, where its method value cost one per request (#13).
type got1xxHandler interface {
	got1xx(code int, header textproto.MIMEHeader) error
}

// got1xxFunc is a ClientTrace's Got1xxResponse as a got1xxHandler.
type got1xxFunc func(code int, header textproto.MIMEHeader) error

func (f got1xxFunc) got1xx(code int, header textproto.MIMEHeader) error { return f(code, header) }

// roundTrip is RoundTrip with got1xx, if not nil, taking the 1xx responses
// instead of a ClientTrace: forward passes its exchange, so that the pool's
// requests need no context value to carry it (issue #13).
func (t *upstreamTransport) roundTrip(req *http.Request, got1xx got1xxHandler) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.Header["Upgrade"] != nil || req.Header["Expect"] != nil {
		if got1xx != nil {
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{Got1xxResponse: got1xx.got1xx}))
		}
		return t.std.RoundTrip(req)
	}
	if got1xx == nil {
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			got1xx = got1xxFunc(trace.Got1xxResponse)
		}
	}
	return t.pool(req.URL.Host).roundTrip(req, got1xx)
}

// CloseIdleConnections closes every idle connection; connections in use
// are closed when their response is done, until a request asks for a
// connection again. The transport stays usable.
func (t *upstreamTransport) CloseIdleConnections() {
	t.std.CloseIdleConnections()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.pools {
		p.closeIdle()
	}
}

func (t *upstreamTransport) pool(host string) *h1Pool {
	t.mu.RLock()
	p := t.pools[host]
	t.mu.RUnlock()
	if p != nil {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p = t.pools[host]; p == nil {
		u := url.URL{Host: host} // the dial address as http.Transport works it out
		p = &h1Pool{cfg: &t.cfg, addr: net.JoinHostPort(u.Hostname(), cmp.Or(u.Port(), "80"))}
		if t.pools == nil {
			t.pools = make(map[string]*h1Pool)
		}
		t.pools[host] = p
	}
	return p
}

// h1Pool is the connections to one upstream address: at most cfg.maxConns
// open, idle or busy, and of those at most cfg.maxIdle idle. A request over
// the cap waits for a connection to come back or close, as long as its
// context allows.
type h1Pool struct {
	cfg  *h1Config
	addr string // host:port dialled

	// mu protects idle, open, waiters, timer, timerSet and closeNew.
	mu       sync.Mutex
	idle     []*h1Conn      // most recently used last
	open     int            // connections open or being dialled
	waiters  []chan *h1Conn // requests waiting at the cap, oldest first; sent nil, one dials
	timer    *time.Timer    // closes connections idle longer than cfg.idle
	timerSet bool           // timer is armed
	// closeNew: closeIdle ran and no request asked for a connection
	// since, so a connection that becomes idle is closed, as
	// http.Transport does after CloseIdleConnections (Handler.Stop on a
	// reload: the old handler's pools get no more requests).
	closeNew bool
}

// h1Conn is one connection to an upstream. It carries one request at a
// time; between requests it sits in its pool's idle list.
type h1Conn struct {
	pool   *h1Pool
	nc     net.Conn
	cancel func()        // closes nc: a request's context.AfterFunc
	br     *bufio.Reader // reads from the h1Conn itself, to count and limit
	bw     *bufio.Writer
	nread  int64 // bytes read from nc
	limit  int64 // bytes the response header may still take; -1: no limit
	reused bool  // served a request before
	idleAt time.Time

	// The exchange's watch of its request's context (see roundTrip).
	stop     func() bool // ends the watch; nil while unwatched
	polledTo time.Time   // the response header deadline, while the read deadline is unwatchedWait's
	sentBody bool        // the last request had a body: the next is watched from the start
}

func (c *h1Conn) Read(p []byte) (int, error) {
	if c.limit >= 0 {
		if c.limit == 0 {
			return 0, errResponseHeaderSize
		}
		p = p[:min(int64(len(p)), c.limit)]
	}
	n, err := c.nc.Read(p)
	c.nread += int64(n)
	if c.limit >= 0 {
		c.limit -= int64(n)
	}
	return n, err
}

// roundTrip sends req on a pooled or new connection and reads the response
// header. A request that needs no body to be resent and failed on a reused
// connection before any byte of a response came back (the upstream closed
// it while idle) is sent again on another.
func (p *h1Pool) roundTrip(req *http.Request, got1xx got1xxHandler) (*http.Response, error) {
	ctx := req.Context()
	if p.cfg.noKeepAlive && !req.Close {
		r := *req // the upstream is told, as http.Transport's DisableKeepAlives tells it
		r.Close = true
		req = &r
	}
	rt, err := newRequestTarget(req)
	if err == nil {
		rt.headerSize, err = validHeader(req.Header)
	}
	if err != nil {
		closeRequestBody(req)
		return nil, err
	}
	replayable := isReplayable(req)
	for {
		c, err := p.get(ctx, replayable)
		if err != nil {
			closeRequestBody(req)
			return nil, err
		}
		resp, err, retry := c.roundTrip(req, &rt, got1xx)
		if err == nil {
			return resp, nil
		}
		if !retry || !replayable || ctx.Err() != nil {
			return nil, err
		}
	}
}

// isReplayable reports whether req may be sent again after a connection
// failed under it, as http.Transport decides: no body, and a method that
// is safe to repeat.
func isReplayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case "", "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// get returns an idle connection or a new one, waiting at the cap. An idle
// connection is checked before it carries a request that cannot be resent
// (see probe).
func (p *h1Pool) get(ctx context.Context, replayable bool) (*h1Conn, error) {
	for {
		c, err := p.take(ctx)
		if err != nil {
			return nil, err
		}
		if !replayable && !c.alive() {
			c.close()
			continue
		}
		return c, nil
	}
}

// take returns an idle connection, or one handed over by a request that
// ended, or a new one, waiting at the cap.
func (p *h1Pool) take(ctx context.Context) (*h1Conn, error) {
	p.mu.Lock()
	p.closeNew = false // a request wants connections again
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	if p.open < p.cfg.maxConns {
		p.open++
		p.mu.Unlock()
		return p.dial(ctx)
	}
	w := make(chan *h1Conn, 1)
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	select {
	case c := <-w:
		if c == nil {
			return p.dial(ctx) // a slot was handed over
		}
		return c, nil
	case <-ctx.Done():
		p.mu.Lock()
		i := slices.Index(p.waiters, w)
		if i >= 0 {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
		}
		p.mu.Unlock()
		if i < 0 { // handed something just now: pass it on
			if c := <-w; c != nil {
				p.put(c)
			} else {
				p.release()
			}
		}
		return nil, fmt.Errorf("proxy: waiting for a connection to %s (limits.max_conns_per_upstream %d): %w", p.addr, p.cfg.maxConns, ctx.Err())
	}
}

// dial opens a connection in a slot already counted in open.
func (p *h1Pool) dial(ctx context.Context) (*h1Conn, error) {
	nc, err := p.cfg.dial(ctx, "tcp", p.addr)
	if err != nil {
		p.release()
		return nil, err
	}
	c := &h1Conn{pool: p, nc: nc, limit: -1, bw: bufio.NewWriterSize(nc, 4<<10)}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.cancel = func() { nc.Close() }
	return c, nil
}

// put makes c, done with a response and reusable, available: to the
// longest waiting request, or in the idle list.
func (p *h1Pool) put(c *h1Conn) {
	c.reused = true
	p.mu.Lock()
	if w := p.popWaiterLocked(); w != nil {
		p.mu.Unlock()
		w <- c
		return
	}
	if p.closeNew || len(p.idle) >= p.cfg.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	c.idleAt = time.Now()
	p.idle = append(p.idle, c)
	if !p.timerSet {
		p.timerSet = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.cfg.idle, p.expire)
		} else {
			p.timer.Reset(p.cfg.idle)
		}
	}
	p.mu.Unlock()
}

// release gives up a slot: to the longest waiting request, which dials, or
// back to the pool.
func (p *h1Pool) release() {
	p.mu.Lock()
	if w := p.popWaiterLocked(); w != nil {
		p.mu.Unlock()
		w <- nil
		return
	}
	p.open--
	p.mu.Unlock()
}

// popWaiterLocked removes and returns the longest waiting request's
// channel, or nil. p.mu must be held.
func (p *h1Pool) popWaiterLocked() chan *h1Conn {
	if len(p.waiters) == 0 {
		return nil
	}
	w := p.waiters[0]
	p.waiters = p.waiters[1:]
	return w
}

// expire closes the connections idle for cfg.idle or longer, and arms the
// timer for the next one.
func (p *h1Pool) expire() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.cfg.idle {
		n++
	}
	stale := make([]*h1Conn, n)
	copy(stale, p.idle)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	p.timerSet = len(p.idle) > 0
	if p.timerSet {
		p.timer.Reset(p.cfg.idle - now.Sub(p.idle[0].idleAt))
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closeNew = true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// close closes c and frees its slot.
func (c *h1Conn) close() {
	c.nc.Close()
	c.pool.release()
}

// roundTrip writes req, whose target is rt, on c and reads the response
// header. It returns the response, or an error with retry reporting that c
// had served a request before and nothing at all came back on it (the
// upstream closed it while idle), so req never reached the upstream's
// handler.
//
// The request's context, once canceled, closes c for as long as the
// exchange may block on it: a context.AfterFunc (c.watch). That costs
// allocations, 2 to 5 per request (issue #13), which the common exchange
// does without: a request without a body whose header fits in c's buffer,
// on a connection that carried no body before, so that the upstream, which
// answered every request before, has read every byte of them and the write
// cannot block; a response header that comes whole within unwatchedWait;
// and a body that came with it. Until then the read deadline is
// unwatchedWait, at which the exchange checks the context and watches it
// from then on, and readResponse watches before it reads anything else.
// A cancellation in that time is noticed at most unwatchedWait late.
func (c *h1Conn) roundTrip(req *http.Request, rt *requestTarget, got1xx got1xxHandler) (_ *http.Response, _ error, retry bool) {
	ctx := req.Context()
	c.nread = 0
	fail := func(err error, wire bool) (*http.Response, error, bool) {
		c.unwatch()
		c.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("proxy: upstream request: %w", ctx.Err()), false
		}
		return nil, err, wire && c.reused && c.nread == 0
	}
	if err := ctx.Err(); err != nil { // as a watch would, at once
		return fail(err, false)
	}
	var w *bodyWriter
	if req.Body == nil || req.Body == http.NoBody {
		unwatched := false
		if hasWireBody(req) {
			c.watch(ctx)
			if err := req.Write(c.bw); err != nil { // framing to work out, or refuse
				return fail(err, false)
			}
		} else {
			unwatched = !c.sentBody && rt.maxWireSize() <= c.bw.Available()
			if !unwatched {
				c.watch(ctx)
			}
			writeBodylessRequest(c.bw, req, rt)
		}
		c.sentBody = false
		if err := c.bw.Flush(); err != nil {
			return fail(err, true)
		}
		now := time.Now()
		wait := c.pool.cfg.responseHeader
		if unwatched && wait > unwatchedWait {
			c.polledTo = now.Add(wait)
			wait = unwatchedWait
		}
		c.nc.SetReadDeadline(now.Add(wait))
	} else {
		// The body goes out while the response is read, as
		// http.Transport does: an upstream may answer before it read
		// all of it. The header timeout starts once it is sent.
		c.watch(ctx)
		c.sentBody = true
		w = newBodyWriter(c, req)
		go w.write()
	}
	resp, fast, err := c.readResponse(req, got1xx)
	c.polledTo = time.Time{}
	if w != nil {
		w.gotHeader()
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		if w != nil {
			if werr := w.abandon(); werr != nil {
				err = werr // the write failed first: the cause
			}
		}
		return fail(err, true)
	}
	closeAfter := resp.Close || req.Close || c.pool.cfg.noKeepAlive
	if resp.Body == http.NoBody {
		finish(c, w, closeAfter, true)
		return resp, nil, false
	}
	var b *h1Body
	if fast == nil {
		b = new(h1Body)
	} else {
		b = &fast.body
		if int64(c.br.Buffered()) < fast.fixed.n {
			c.watch(ctx) // the body is still to come
		}
	}
	*b = h1Body{c: c, rc: resp.Body, w: w, closeAfter: closeAfter}
	resp.Body = b
	return resp, nil, false
}

// readResponse reads the final response header, passing 1xx responses to
// got1xx if not nil (forward passes them on). A response
// parseBufferedResponse read comes with room for its h1Body (fast).
func (c *h1Conn) readResponse(req *http.Request, got1xx got1xxHandler) (_ *http.Response, fast *h1Response, _ error) {
	c.limit = maxResponseHeaderBytes
	defer func() { c.limit = -1 }()
	for {
		if _, err := c.br.Peek(1); err != nil { // wait for the response
			if !c.polledTo.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) {
				if err := c.watchLate(req.Context()); err != nil {
					return nil, nil, err
				}
				continue // and wait until the response header deadline
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // as http.ReadResponse reports it
			}
			return nil, nil, err
		}
		if r := parseBufferedResponse(c.br, req); r != nil {
			return &r.resp, r, nil
		}
		if err := c.watchLate(req.Context()); err != nil { // http.ReadResponse may wait
			return nil, nil, err
		}
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, nil, errUpstreamSwitched
		case resp.StatusCode < 200:
			if got1xx != nil {
				if err := got1xx.got1xx(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, nil, err
				}
				c.limit = maxResponseHeaderBytes
			}
			continue
		}
		return resp, nil, nil
	}
}

// validHeader refuses header fields http.Transport refuses to send. It
// returns the bytes h takes on the wire, "Key: value\r\n" a value.
func validHeader(h http.Header) (size int, _ error) {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return 0, fmt.Errorf("proxy: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return 0, fmt.Errorf("proxy: invalid header field value for %q", k) // the value may be secret
			}
			size += len(k) + len(v) + 4
		}
	}
	return size, nil
}

// alive reports whether an idle connection can carry a request: the
// upstream has not closed it nor sent anything unasked.
func (c *h1Conn) alive() bool {
	return probe(c.nc)
}

// finish ends c's exchange: back to the pool if the response was read
// whole (clean), the request went out whole, and nothing asks to close.
//
// A body's writer may still be at work when the response ends, even when
// the upstream answered only after reading the whole body: it may not have
// come back from its last write yet. If the body was read whole from the
// client, finish waits for the write (under the request's context, for at
// most maxWriteWaitBeforeReuse) and then decides, so the
// connection is in the pool before the response's last Read returns and the
// next request finds it, however the two goroutines were scheduled, as
// http.Transport's persistConn does (wroteRequest, waitForBodyRead). An
// unfinished body is not waited for, as the client may never finish it:
// the connection, on which a request was cut short, is closed.
func finish(c *h1Conn, w *bodyWriter, closeAfter, clean bool) {
	reuse := clean && !closeAfter && c.br.Buffered() == 0
	if w != nil {
		reuse = w.wait(reuse)
	}
	canceled := !c.unwatch() // the context fired: c is being closed
	if reuse && !canceled {
		c.pool.put(c)
		return
	}
	c.close()
}

// h1Body is an upstream response body. Read to its end, it returns the
// connection to the pool, its last Read waiting if need be for the request
// body's last write (finish); closed before, or broken, it closes it.
type h1Body struct {
	c          *h1Conn
	rc         io.ReadCloser // as http.ReadResponse made it
	w          *bodyWriter   // nil without a request body
	closeAfter bool
	done       bool
	err        error // returned by Read once done
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.end(err == io.EOF, err)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.end(false, errBodyClosed)
	}
	return nil
}

func (b *h1Body) end(clean bool, err error) {
	b.done, b.err = true, err
	finish(b.c, b.w, b.closeAfter, clean)
}
