package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// failingBody returns its text, then err.
type failingBody struct {
	r   io.Reader
	err error
}

func (b *failingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = b.err
	}
	return n, err
}

func (b *failingBody) Close() error { return nil }

// TestH1RequestBodyReadError: a body whose reader fails half way ends the
// exchange with that error and closes the connection, on which the upstream
// got a request cut short; the next request has a new one.
func TestH1RequestBodyReadError(t *testing.T) {
	t.Parallel()
	for _, chunked := range []bool{false, true} {
		name := map[bool]string{false: "content-length", true: "chunked"}[chunked]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bodyErrs := make(chan error, 10)
			up, conns := countedUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if r.Method == "POST" {
					bodyErrs <- err
				}
				w.Write(b)
			})
			tr := newUpstreamTransport(&RouteConfig{}, nil)
			t.Cleanup(tr.CloseIdleConnections)

			clientErr := errors.New("client went away")
			req, _ := http.NewRequest("POST", up.URL, &failingBody{r: strings.NewReader("half"), err: clientErr})
			req.ContentLength = 100
			if chunked {
				req.ContentLength = -1
			}
			if resp, err := tr.RoundTrip(req); err == nil {
				resp.Body.Close()
				t.Fatalf("body failing half way: status %d, want an error", resp.StatusCode)
			} else if !strings.Contains(err.Error(), clientErr.Error()) {
				t.Errorf("body failing half way: %v, want the body's error", err)
			}
			if p := tr.pool(req.URL.Host); p.open != 0 || len(p.idle) != 0 {
				t.Errorf("after the body failed: %d open, %d idle, want none", p.open, len(p.idle))
			}
			if err := <-bodyErrs; err == nil {
				t.Error("the upstream read the failed body whole, want it cut short")
			}
			req, _ = http.NewRequest("PUT", up.URL, strings.NewReader("whole"))
			if _, b := h1Do(t, tr, req); b != "whole" {
				t.Errorf("next request: upstream saw %q, want whole", b)
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2: the cut one closed", n)
			}
		})
	}
}

// writeGate holds a connection's writes after the first (the request
// header): held closes once the first is held, the body having been read
// whole with only its flush to the upstream left, and release lets them go.
// onWait runs when a write deadline is set: finish waits for the write.
type writeGate struct {
	held, release chan struct{}
	heldOnce      sync.Once
	releaseOnce   sync.Once
	onWait        func()
	// expired, if not nil, is closed when a write deadline passes: the
	// held write then fails as a real one would.
	expired    chan struct{}
	expireOnce sync.Once
}

func (g *writeGate) open() { g.releaseOnce.Do(func() { close(g.release) }) }

// gatedConn is a connection whose writes go through a writeGate; Close
// opens the gate.
type gatedConn struct {
	net.Conn
	g      *writeGate
	writes int
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if c.writes++; c.writes > 1 {
		c.g.heldOnce.Do(func() { close(c.g.held) })
		select {
		case <-c.g.release:
		case <-c.g.expired: // nil unless the gate honours deadlines
			return 0, os.ErrDeadlineExceeded
		}
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		c.g.onWait()
		if c.g.expired != nil {
			time.AfterFunc(time.Until(t), func() { c.g.expireOnce.Do(func() { close(c.g.expired) }) })
		}
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *gatedConn) Close() error {
	c.g.open()
	return c.Conn.Close()
}

// opaqueReader hides a reader's type from req.Write, which then flushes the
// header before the body, as it does for a client's body.
type opaqueReader struct{ io.Reader }

// TestH1ResponseBeforeLastWrite: the upstream answers while the body's last
// write is still under way, the body having been read whole (a writeGate
// holds the write until then, so the response always comes first). finish
// waits for the write and the connection carries the next request; if the
// request's context is canceled during that wait, or the upstream does not
// take the write within maxWriteWaitBeforeReuse, the connection is closed
// (without that bound the "stalled" case hangs).
func TestH1ResponseBeforeLastWrite(t *testing.T) {
	t.Parallel()
	for _, end := range []string{"written", "canceled", "stalled"} {
		cancel := end != "written"
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			ctx, cancelCtx := context.WithCancel(context.Background())
			defer cancelCtx()
			g := &writeGate{held: make(chan struct{}), release: make(chan struct{})}
			switch end {
			case "written":
				g.onWait = g.open
			case "canceled":
				g.onWait = cancelCtx // which closes the connection, and opens the gate
			case "stalled":
				g.onWait = func() {} // the write fails at its deadline
				g.expired = make(chan struct{})
			}
			up := startRawUpstream(t, func(i int, r *http.Request, w io.Writer) bool {
				if r.ContentLength > 0 {
					<-g.held
				}
				io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true // the body is read after
			})
			tr := newUpstreamTransport(&RouteConfig{}, nil)
			t.Cleanup(tr.CloseIdleConnections)
			dial := tr.cfg.dial
			tr.cfg.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &gatedConn{Conn: nc, g: g}, nil
			}
			url := up.url()

			req, _ := http.NewRequestWithContext(ctx, "POST", url, opaqueReader{strings.NewReader("hello")})
			req.ContentLength = 5
			if _, b := h1Do(t, tr, req); b != "ok" {
				t.Errorf("body %q, want ok", b)
			}
			p := tr.pool(req.URL.Host)
			wantConns := int64(1)
			if cancel {
				wantConns = 2
				if p.open != 0 || len(p.idle) != 0 {
					t.Errorf("%s during the wait: %d open, %d idle, want none", end, p.open, len(p.idle))
				}
			} else if len(p.idle) != 1 {
				t.Errorf("%d idle connections once the response was read, want 1", len(p.idle))
			}
			if _, body := h1Get(t, tr, "GET", url); body != "ok" {
				t.Errorf("next request: body %q, want ok", body)
			}
			if n := up.accepted.Load(); n != wantConns {
				t.Errorf("%d connections, want %d", n, wantConns)
			}
		})
	}
}

// TestProxiedRequestBodiesReuseConnection: requests with bodies proxied by
// Handler, from HTTP/1.1 and HTTP/2 clients, Content-Length and chunked, all
// go to the upstream over one connection.
func TestProxiedRequestBodiesReuseConnection(t *testing.T) {
	t.Parallel()
	for _, h2 := range []bool{false, true} {
		name := map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up, conns := countedUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				w.Write(b)
			})
			h, _ := benchHandler(t, up.URL, nil)
			front := httptest.NewUnstartedServer(h)
			front.EnableHTTP2 = h2
			front.StartTLS()
			t.Cleanup(front.Close)
			client := front.Client()
			for i := range 10 {
				var body io.Reader = strings.NewReader("sized")
				if i%2 == 1 {
					body = opaqueReader{strings.NewReader("chunked")} // no length known: chunked upstream
				}
				resp, err := client.Post(front.URL, "text/plain", body)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
					t.Fatalf("client spoke %s", resp.Proto)
				}
				if want := map[bool]string{false: "sized", true: "chunked"}[i%2 == 1]; string(b) != want {
					t.Errorf("request %d: %d %q, want %q", i, resp.StatusCode, b, want)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d upstream connections for 10 proxied requests with bodies, want 1", n)
			}
		})
	}
}

// BenchmarkProxyRequestBody is BenchmarkProxyRequest with a POST of a
// 5-byte body (its reader allocated per request by the loop). dials/op is
// the upstream connections opened per request: 0 once each is reused.
func BenchmarkProxyRequestBody(b *testing.B) {
	up, conns := countedUpstream(b, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	h, req := benchHandler(b, up.URL, nil)
	req = req.WithContext(b.Context())
	req.Method, req.ContentLength = "POST", 5
	w := &discardWriter{}
	body := strings.NewReader("hello")
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		body.Reset("hello")
		req.Body = io.NopCloser(body)
		h.ServeHTTP(w, req)
	}
	b.ReportMetric(float64(conns.Load())/float64(b.N), "dials/op")
}
