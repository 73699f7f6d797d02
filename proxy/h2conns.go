package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"

	"golang.org/x/net/http2"
)

// h2Conns serves HTTP/2 connections on goroutines of their own, outside
// http.Server, and tracks them for Server.Shutdown (#13).
//
// Why: http.Server runs an HTTP/2 connection's serve loop on the goroutine
// that accepted it, below net/http's conn.serve, whose 1.1 KiB frame pushes
// the parked loop past a 4 KiB stack: every idle HTTP/2 connection held
// 8 KiB of stack for its serve loop plus 4 KiB for its frame reader. Started
// on a fresh goroutine directly from ServeConn, the parked loop fits in
// 4 KiB until deeper work (a request, a PING) has grown it, and the
// connection skips conn.serve's per-connection allocations (0.5 KiB).
// Measured with 3,000 connections idle after the HTTP/2 preface
// (bench/idleconns): 12.4 → 8.8 KiB of stack and 32 → 28 kB of RSS per
// connection. The HTTP/2 settings are http.Server's (HTTP2, IdleTimeout,
// WriteTimeout, MaxHeaderBytes, ErrorLog): ServeConn reads them from
// BaseConfig, as net/http's own HTTP/2 server does.
//
// x/net/http2's Server and ServeConn are deprecated in favour of net/http,
// which offers no way to serve one connection; they remain supported.
type h2Conns struct {
	//lint:ignore SA1019 see above
	srv  *http2.Server
	base *http.Server
	// connContext derives a connection's base context, as
	// http.Server.ConnContext does for HTTP/1.1.
	connContext func(context.Context, net.Conn) context.Context
	wg          sync.WaitGroup // one per connection being served

	// mu protects conns and closed.
	mu     sync.Mutex
	conns  map[*tls.Conn]struct{}
	closed bool // no new connection is served
}

// newH2Conns configures base for HTTP/2 with x/net/http2 (which also
// registers the GOAWAY that base.Shutdown sends to every HTTP/2
// connection) and returns the h2Conns that serves them.
func newH2Conns(base *http.Server, connContext func(context.Context, net.Conn) context.Context) (*h2Conns, error) {
	//lint:ignore SA1019 see h2Conns
	h := &h2Conns{srv: &http2.Server{}, base: base, connContext: connContext, conns: make(map[*tls.Conn]struct{})}
	//lint:ignore SA1019 net/http cannot serve one connection on a goroutine of ours (see h2Conns)
	if err := http2.ConfigureServer(base, h.srv); err != nil {
		return nil, err
	}
	return h, nil
}

// serve serves tc, whose handshake negotiated h2, on a new goroutine, or
// closes it after close.
func (h *h2Conns) serve(tc *tls.Conn) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		tc.Close()
		return
	}
	h.conns[tc] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	go h.run(tc)
}

// run is the goroutine of one connection. Its frame stays small: it is
// below the serve loop for the whole life of the connection. The server
// writes through an h2WriteConn, which gathers its flushes (h2write.go).
func (h *h2Conns) run(tc *tls.Conn) {
	defer h.done(tc)
	//lint:ignore SA1019 see h2Conns
	h.srv.ServeConn(newH2WriteConn(tc), &http2.ServeConnOpts{
		Context:    h.connContext(context.Background(), tc),
		BaseConfig: h.base,
		Handler:    h.base.Handler,
	})
}

func (h *h2Conns) done(tc *tls.Conn) {
	h.mu.Lock()
	delete(h.conns, tc)
	h.mu.Unlock()
	h.wg.Done()
}

// wait stops serving new connections and waits until the connections being
// served have ended (base.Shutdown sent them GOAWAY) or ctx is done.
func (h *h2Conns) wait(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeAll stops serving new connections and closes those being served.
func (h *h2Conns) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for tc := range h.conns {
		tc.Close()
	}
}

// h2Listener is the listener http.Server serves: it returns HTTP/1.1
// connections and hands HTTP/2 ones to h2Conns.
type h2Listener struct {
	*tlsListener
	h2 *h2Conns
}

func (l h2Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.tlsListener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
			l.h2.serve(tc)
			continue
		}
		return c, nil
	}
}
