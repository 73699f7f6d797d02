package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// countedUpstream starts an httptest upstream serving h, closed when the
// test ends, and counts the connections it accepts.
func countedUpstream(tb testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	conns := new(atomic.Int64)
	up := httptest.NewUnstartedServer(h)
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	tb.Cleanup(up.Close)
	return up, conns
}

// rawUpstream is an HTTP/1.1 upstream written by hand, for the framings
// and failures net/http's server never produces. respond answers the i-th
// request (from 0, over all connections), reading as much of its body as
// it likes (the rest is read after it), and reports whether to keep the
// connection open.
type rawUpstream struct {
	ln       net.Listener
	accepted atomic.Int64  // connections accepted
	served   atomic.Int64  // requests read
	closed   chan struct{} // a value each time respond's false closed a connection
}

func startRawUpstream(t *testing.T, respond func(i int, r *http.Request, w io.Writer) bool) *rawUpstream {
	t.Helper()
	u := &rawUpstream{closed: make(chan struct{}, 100)}
	u.ln = testserver.ServeTCP(t, &u.accepted, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			keep := respond(int(u.served.Add(1)-1), r, c)
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			if !keep {
				c.Close()
				u.closed <- struct{}{}
				return
			}
		}
	})
	return u
}

func (u *rawUpstream) url() string { return "http://" + u.ln.Addr().String() }

// h1Get sends a request without a body through tr and returns the response
// with its body read.
func h1Get(t *testing.T, tr http.RoundTripper, method, url string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	return h1Do(t, tr, req)
}

// h1Do sends req through tr and returns the response with its body read.
func h1Do(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func TestH1ResponseFraming(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		method   string
		response string // the first response; the second is always "ok" with a Content-Length
		close    bool   // the upstream closes after the first response
		wantBody string
		wantConn int64 // connections accepted after both requests: 1 if the first was reused
		check    func(t *testing.T, resp *http.Response)
	}{
		{name: "content-length", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", wantBody: "hello", wantConn: 1},
		{
			name: "chunked with trailer", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Sum: 42\r\n\r\n",
			wantBody: "hello", wantConn: 1,
			check: func(t *testing.T, resp *http.Response) {
				if got := resp.Trailer.Get("X-Sum"); got != "42" {
					t.Errorf("trailer X-Sum %q, want 42", got)
				}
			},
		},
		{name: "read to EOF", response: "HTTP/1.1 200 OK\r\n\r\nuntil the end", close: true, wantBody: "until the end", wantConn: 2},
		{name: "Connection: close", response: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", close: true, wantBody: "hi", wantConn: 2},
		{name: "HTTP/1.0", response: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", close: true, wantBody: "hi", wantConn: 2},
		{name: "HEAD", method: "HEAD", response: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", wantConn: 1},
		{name: "204", response: "HTTP/1.1 204 No Content\r\n\r\n", wantConn: 1},
		{name: "304", response: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", wantConn: 1},
		{name: "closed after a keep-alive response", response: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", close: true, wantBody: "hi", wantConn: 2},
		{name: "bytes after the response", response: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiXX", wantBody: "hi", wantConn: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
				if i == 0 {
					io.WriteString(w, tt.response)
					return !tt.close
				}
				io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true
			})
			tr := newUpstreamTransport(&RouteConfig{}, nil)
			t.Cleanup(tr.CloseIdleConnections)
			resp, body := h1Get(t, tr, cmp.Or(tt.method, "GET"), up.url())
			if body != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
			if tt.close {
				<-up.closed // the close is on the wire before the next request
			}
			if _, body := h1Get(t, tr, "GET", up.url()); body != "ok" {
				t.Errorf("second request: body %q, want ok", body)
			}
			if n := up.accepted.Load(); n != tt.wantConn {
				t.Errorf("%d connections accepted, want %d", n, tt.wantConn)
			}
		})
	}
}

// TestH1StaleConnection: a request that cannot be resent (a POST) is not
// put on a connection the upstream closed while it was idle, and one that
// can (a GET) is resent on a new connection when it meets one.
func TestH1StaleConnection(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
				io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return i > 0 // closes the first connection once idle
			})
			tr := newUpstreamTransport(&RouteConfig{}, nil)
			t.Cleanup(tr.CloseIdleConnections)
			h1Get(t, tr, "GET", up.url())
			<-up.closed
			req, _ := http.NewRequest(method, up.url(), strings.NewReader("body"))
			if method == "GET" {
				req.Body = nil // a POST has a body, a GET none: both as ReverseProxy sends them
				req.ContentLength = 0
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s after the upstream closed the idle connection: %v", method, err)
			}
			resp.Body.Close()
			if n := up.accepted.Load(); n != 2 {
				t.Errorf("%d connections accepted, want 2", n)
			}
		})
	}
}

func TestH1MalformedResponse(t *testing.T) {
	t.Parallel()
	for _, response := range []string{
		"HTTP/1.1 abc OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
			io.WriteString(w, response)
			return true
		})
		tr := newUpstreamTransport(&RouteConfig{}, nil)
		req, _ := http.NewRequest("GET", up.url(), nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Errorf("response %q: status %d, want an error", response, resp.StatusCode)
		}
		if p := tr.pool(req.URL.Host); p.open != 0 || len(p.idle) != 0 {
			t.Errorf("response %q: %d connections open, %d idle after the error, want none", response, p.open, len(p.idle))
		}
	}
}

func TestH1InformationalResponses(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
		io.WriteString(w, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	t.Cleanup(tr.CloseIdleConnections)
	var got []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", up.url(), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" || len(got) != 1 || got[0] != "</a.css>; rel=preload" {
		t.Errorf("got %d %q after 1xx %q, want 200 \"ok\" after one 103 with its Link", resp.StatusCode, b, got)
	}
}

// TestH1RequestBodies: Content-Length and chunked bodies (with a trailer)
// arrive whole, and the connection carries the next request once the body
// was sent and the response read: one connection for all of them, however
// the body's writer and the response's reader are scheduled (finish).
func TestH1RequestBodies(t *testing.T) {
	t.Parallel()
	up, conns := countedUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Trailer", r.Trailer.Get("X-Check"))
		io.WriteString(w, r.Method+" "+strings.Join(r.TransferEncoding, ",")+" "+string(b))
	})
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	t.Cleanup(tr.CloseIdleConnections)

	for i := range 5 {
		req, _ := http.NewRequest("PUT", up.URL, strings.NewReader("sized"))
		if _, b := h1Do(t, tr, req); b != "PUT  sized" {
			t.Errorf("Content-Length body %d: upstream saw %q", i, b)
		}

		req, _ = http.NewRequest("POST", up.URL, io.MultiReader(strings.NewReader("chun"), strings.NewReader("ked")))
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Check": {"7"}}
		if resp, b := h1Do(t, tr, req); b != "POST chunked chunked" || resp.Header.Get("X-Trailer") != "7" {
			t.Errorf("chunked body %d: upstream saw %q, trailer %q", i, b, resp.Header.Get("X-Trailer"))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 10 requests with bodies in a row, want 1", n)
	}
}

// TestH1EarlyResponse: an upstream that answers, keep-alive, before it read
// the body (none of it, or part) gets its answer through. The connection is
// closed, as finish does not wait for a client that may never finish its
// body: the upstream never sees another request after the half body, and
// the next request goes on a new connection.
func TestH1EarlyResponse(t *testing.T) {
	t.Parallel()
	for _, sent := range []string{"", "partial"} {
		t.Run(cmp.Or(sent, "nothing"), func(t *testing.T) {
			t.Parallel()
			type bodyEnd struct {
				n   int64
				err error
			}
			firstBody := make(chan bodyEnd, 1)
			up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
				if r.ContentLength <= 0 {
					io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					return true
				}
				n, err := io.CopyN(io.Discard, r.Body, int64(len(sent)))
				if err == nil {
					io.WriteString(w, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
					var m int64
					m, err = io.Copy(io.Discard, r.Body) // as a keep-alive server must
					n += m
				}
				firstBody <- bodyEnd{n, err}
				return true
			})
			tr := newUpstreamTransport(&RouteConfig{}, nil)
			t.Cleanup(tr.CloseIdleConnections)
			pr, pw := io.Pipe()
			t.Cleanup(func() { pw.Close() }) // ends the body's writer, still reading it
			if sent != "" {
				go io.WriteString(pw, sent) // the rest never comes
			}
			req, _ := http.NewRequest("POST", up.url(), pr)
			req.ContentLength = 1 << 20
			resp, b := h1Do(t, tr, req)
			if resp.StatusCode != 413 || b != "big" {
				t.Fatalf("got %d %q, want the upstream's early 413 \"big\"", resp.StatusCode, b)
			}
			if p := tr.pool(req.URL.Host); p.open != 0 || len(p.idle) != 0 {
				t.Errorf("after an early response to an unfinished body: %d open, %d idle, want none", p.open, len(p.idle))
			}
			if _, body := h1Get(t, tr, "GET", up.url()); body != "ok" {
				t.Errorf("next request: body %q, want ok", body)
			}
			if n := up.accepted.Load(); n != 2 {
				t.Errorf("%d connections accepted, want 2: the first was closed", n)
			}
			if got := <-firstBody; got.err == nil || got.n != int64(len(sent)) {
				t.Errorf("upstream read %d bytes of the first body, then %v; want the %d sent, then the connection's end", got.n, got.err, len(sent))
			}
		})
	}
}

// waitPool returns once p has n requests waiting for a connection.
func waitPool(t *testing.T, p *h1Pool, n int) {
	t.Helper()
	for {
		p.mu.Lock()
		w := len(p.waiters)
		p.mu.Unlock()
		if w == n {
			return
		}
		runtime.Gosched()
	}
}

// blockingUpstream answers /block only when release is closed, after it
// signalled arrived; other paths at once. It counts connections.
func blockingUpstream(t *testing.T) (up *httptest.Server, conns *atomic.Int64, arrived chan struct{}, release chan struct{}) {
	arrived, release = make(chan struct{}, 10), make(chan struct{})
	up, conns = countedUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return up, conns, arrived, release
}

func TestH1MaxConnsPerUpstream(t *testing.T) {
	t.Parallel()
	up, conns, arrived, release := blockingUpstream(t)
	tr := newUpstreamTransport(&RouteConfig{Limits: RouteLimits{MaxConnsPerUpstream: 1}}, nil)
	t.Cleanup(tr.CloseIdleConnections)
	p := tr.pool(strings.TrimPrefix(up.URL, "http://"))

	first := make(chan string)
	go func() {
		req, _ := http.NewRequest("GET", up.URL+"/block", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			first <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first <- string(b)
	}()
	<-arrived

	// A request over the cap waits, and gives up with its context.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", up.URL+"/", nil)
		_, err := tr.RoundTrip(req)
		gaveUp <- err
	}()
	waitPool(t, p, 1)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("waiting request canceled: %v, want context.Canceled", err)
	}

	// Another one gets the connection when the first is done with it.
	second := make(chan string)
	go func() {
		_, body := h1Get(t, tr, "GET", up.URL+"/")
		second <- body
	}()
	waitPool(t, p, 1)
	close(release)
	if got := <-first; got != "ok" {
		t.Errorf("first request: %q", got)
	}
	if got := <-second; got != "ok" {
		t.Errorf("second request: %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections with max_conns_per_upstream 1", n)
	}
}

// TestH1CanceledRequestFreesConnection: a client that goes away while the
// upstream thinks closes the upstream connection and frees its slot.
func TestH1CanceledRequestFreesConnection(t *testing.T) {
	t.Parallel()
	up, conns, arrived, _ := blockingUpstream(t)
	tr := newUpstreamTransport(&RouteConfig{
		Limits:   RouteLimits{MaxConnsPerUpstream: 1},
		Timeouts: UpstreamTimeouts{ResponseHeaderTimeout: time.Hour}, // only the cancel ends the wait
	}, nil)
	t.Cleanup(tr.CloseIdleConnections)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", up.URL+"/block", nil)
		_, err := tr.RoundTrip(req)
		done <- err
	}()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled request: %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", up.URL+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("request after the cancel: %v (the slot was not freed)", err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the canceled one closed", n)
	}
}

// TestH1IdleConnections: idle connections are reused, closed by
// CloseIdleConnections and by the idle timeout, and kept up to the idle cap.
func TestH1IdleConnections(t *testing.T) {
	t.Parallel()
	up, conns, arrived, release := blockingUpstream(t)
	tr := newUpstreamTransport(&RouteConfig{Limits: RouteLimits{MaxIdleConnsPerUpstream: 1}}, nil)
	t.Cleanup(tr.CloseIdleConnections)
	p := tr.pool(strings.TrimPrefix(up.URL, "http://"))
	for range 5 {
		h1Get(t, tr, "GET", up.URL+"/")
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 requests in a row, want 1", n)
	}
	tr.CloseIdleConnections()
	h1Get(t, tr, "GET", up.URL+"/")
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections after CloseIdleConnections, want 2", n)
	}

	p.mu.Lock()
	p.idle[0].idleAt = time.Now().Add(-DefaultIdleConnTimeout)
	p.mu.Unlock()
	p.expire()
	if len(p.idle) != 0 || p.open != 0 {
		t.Fatalf("after the idle timeout: %d idle, %d open, want none", len(p.idle), p.open)
	}

	// Two at once: two connections, one kept idle.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { h1Get(t, tr, "GET", up.URL+"/block") })
	}
	<-arrived
	<-arrived
	close(release)
	wg.Wait()
	if len(p.idle) != 1 || p.open != 1 {
		t.Errorf("max_idle_conns_per_upstream 1: %d idle, %d open, want 1 and 1", len(p.idle), p.open)
	}
}

func TestH1DialError(t *testing.T) {
	t.Parallel()
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	req, _ := http.NewRequest("GET", deadUpstreamURL(t), nil)
	_, err := tr.RoundTrip(req)
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("error %v, want a *DialError", err)
	}
	if p := tr.pool(req.URL.Host); p.open != 0 {
		t.Errorf("%d connections counted open after a failed dial", p.open)
	}
}

// TestH1PicksTransport: only plain requests to http upstreams take the
// pool; the rest go to http.Transport.
func TestH1PicksTransport(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "up", nil)
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	t.Cleanup(tr.CloseIdleConnections)
	host := strings.TrimPrefix(up.URL, "http://")
	for _, tt := range []struct {
		header string
		pool   bool
	}{{"", true}, {"Expect", false}, {"Upgrade", false}} {
		req, _ := http.NewRequest("GET", up.URL, nil)
		if tt.header != "" {
			req.Header.Set(tt.header, "x")
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		p := tr.pool(host)
		if got := p.open > 0; got != tt.pool {
			t.Errorf("header %q: pool used %v, want %v", tt.header, got, tt.pool)
		}
		tr.CloseIdleConnections()
	}
}

// TestH1NoKeepAliveWithProxyProtocol: with send_proxy_protocol every
// request has a connection of its own, and says so (Connection: close).
func TestH1NoKeepAliveWithProxyProtocol(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns, closing atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Close {
			closing.Add(1)
		}
		io.WriteString(w, "ok")
	}), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(&proxyproto.Listener{Listener: ln})
	t.Cleanup(func() { srv.Close() })
	tr := newUpstreamTransport(&RouteConfig{SendProxyProtocol: SendProxyV2}, nil)
	for range 3 {
		if _, body := h1Get(t, tr, "GET", "http://"+ln.Addr().String()); body != "ok" {
			t.Fatalf("body %q", body)
		}
	}
	if conns.Load() != 3 || closing.Load() != 3 {
		t.Errorf("%d connections, %d requests with Connection: close; want 3 and 3", conns.Load(), closing.Load())
	}
}

func TestH1ResponseHeaderLimit(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nX-Big: ")
		w.Write(bytes.Repeat([]byte("a"), maxResponseHeaderBytes))
		io.WriteString(w, "\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	req, _ := http.NewRequest("GET", up.url(), nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, errResponseHeaderSize) {
		t.Errorf("header of %d bytes: %v, want errResponseHeaderSize", maxResponseHeaderBytes, err)
	}
	if p := tr.pool(req.URL.Host); p.open != 0 {
		t.Errorf("%d connections open after the error, want 0", p.open)
	}
}

// TestH1CloseIdleClosesConnectionsInUse: after CloseIdleConnections, a
// connection whose response was still being read is closed when it ends,
// not pooled (Handler.Stop on a reload leaves the old pools without
// requests), until a request asks for a connection again.
func TestH1CloseIdleClosesConnectionsInUse(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, func(_ int, _ *http.Request, w io.Writer) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequest("GET", up.url(), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections() // while the response is in use
	if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
		t.Fatalf("body %q", b)
	}
	resp.Body.Close()
	p := tr.pool(req.URL.Host)
	p.mu.Lock()
	idle, open := len(p.idle), p.open
	p.mu.Unlock()
	if idle != 0 || open != 0 {
		t.Fatalf("after CloseIdleConnections, the connection in use ended with %d idle, %d open; want it closed", idle, open)
	}

	// A new request: connections are pooled again.
	if _, b := h1Get(t, tr, "GET", up.url()); b != "ok" {
		t.Fatalf("next request: body %q", b)
	}
	p.mu.Lock()
	idle = len(p.idle)
	p.mu.Unlock()
	if idle != 1 || up.accepted.Load() != 2 {
		t.Fatalf("next request: %d idle, %d connections accepted; want 1 idle of 2", idle, up.accepted.Load())
	}
}
