package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// readRequestHeader reads one request header from br, as an upstream does.
func readRequestHeader(br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	if _, err := tp.ReadLine(); err != nil {
		return err
	}
	_, err := tp.ReadMIMEHeader()
	return err
}

// TestH1CanceledExchangeClosesConnection: however far an exchange got, and
// whether roundTrip watched its context from the start or only once it
// could block (unwatchedWait), a cancellation closes the upstream
// connection and frees its slot.
func TestH1CanceledExchangeClosesConnection(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		header string // a request header field's value
		sent   string // what the upstream answers before it stalls
		body   bool   // cancel while the body is read, not the header
	}{
		{name: "no response yet"},
		{name: "no response yet, watched from the start", header: strings.Repeat("x", 8<<10)},
		{name: "part of the header", sent: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"},
		{name: "part of the body", sent: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", body: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sent, closed := make(chan struct{}), make(chan struct{})
			ln := testserver.ServeTCP(t, new(atomic.Int64), func(c net.Conn) {
				br := bufio.NewReader(c)
				if readRequestHeader(br) != nil {
					return
				}
				io.WriteString(c, tt.sent)
				close(sent)
				io.Copy(io.Discard, br) // until the proxy closes it
				close(closed)
			})
			tr := newUpstreamTransport(&RouteConfig{
				Limits:   RouteLimits{MaxConnsPerUpstream: 1},
				Timeouts: UpstreamTimeouts{ResponseHeaderTimeout: time.Hour}, // only the cancel ends the wait
			}, nil)
			t.Cleanup(tr.CloseIdleConnections)
			p := tr.pool(ln.Addr().String())

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/", nil)
			if tt.header != "" {
				req.Header.Set("X-Large", tt.header)
			}
			var err error
			if tt.body {
				resp, rerr := tr.RoundTrip(req)
				if rerr != nil {
					t.Fatal(rerr)
				}
				buf := make([]byte, 2)
				if _, rerr := io.ReadFull(resp.Body, buf); rerr != nil {
					t.Fatalf("first bytes of the body: %v", rerr)
				}
				cancel()
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			} else {
				done := make(chan error)
				go func() {
					_, err := tr.RoundTrip(req)
					done <- err
				}()
				<-sent
				cancel()
				if err = <-done; !errors.Is(err, context.Canceled) {
					t.Errorf("canceled request: %v, want context.Canceled", err)
				}
			}
			if err == nil {
				t.Error("canceled exchange ended without an error")
			}
			<-closed // the upstream saw the connection close
			p.mu.Lock()
			open := p.open
			p.mu.Unlock()
			if open != 0 {
				t.Errorf("%d connections counted open after the cancel, want 0", open)
			}
		})
	}
}

// TestH1SlowResponseHeader: a response header that comes only once the
// exchange watches its context (after unwatchedWait, or after a part of
// the header), whole or in parts, or a body that comes after its header,
// is read as any other, and its connection is reused. The upstream sends
// the rest when the exchange starts watching, so each request takes the
// late path.
func TestH1SlowResponseHeader(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name          string
		before, after string // sent before and after the upstream's pause
	}{
		{name: "whole", after: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{name: "in parts", before: "HTTP/1.1 200 OK\r\nContent-Len", after: "gth: 2\r\n\r\nok"},
		{name: "body late", before: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", after: "ok"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conns := new(atomic.Int64)
			watching := make(chan struct{}, 4)
			var early, unwatched atomic.Int64
			ln := testserver.ServeTCP(t, conns, func(c net.Conn) {
				br := bufio.NewReader(c)
				for readRequestHeader(br) == nil {
					select {
					case <-watching: // before any of the response
						early.Add(1)
					default:
					}
					io.WriteString(c, tt.before)
					select {
					case <-watching:
					case <-time.After(10 * time.Second): // bounds a broken test
						unwatched.Add(1)
					}
					io.WriteString(c, tt.after)
				}
			})
			tr := newUpstreamTransport(&RouteConfig{}, nil)
			tr.cfg.watching = func() {
				select {
				case watching <- struct{}{}:
				default:
				}
			}
			t.Cleanup(tr.CloseIdleConnections)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range 2 {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/", nil)
				if _, body := h1Do(t, tr, req); body != "ok" {
					t.Errorf("request %d: body %q, want ok", i, body)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections for 2 requests, want 1", n)
			}
			if n, m := early.Load(), unwatched.Load(); n != 0 || m != 0 {
				t.Errorf("of 2 exchanges, %d watched their context before any response, %d never; want each to start watching late", n, m)
			}
		})
	}
}

// BenchmarkProxyRequestContextPerRequest is
// BenchmarkProxyRequestCannedUpstream with a new cancelable context per
// request, as net/http's server gives each: watching it costs more than
// watching a long-lived one (its done channel and its children's map are
// made for the watch). Measured: 12 allocations, 2 of them the benchmark's
// own; 19 when every exchange was watched (#13).
func BenchmarkProxyRequestContextPerRequest(b *testing.B) {
	h, req := benchHandler(b, cannedUpstream(b), nil)
	w := &discardWriter{}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		ctx, cancel := context.WithCancel(b.Context())
		h.ServeHTTP(w, req.WithContext(ctx))
		cancel()
	}
}
