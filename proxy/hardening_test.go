package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// hardenedProxy is a Server with a Handler in front of one upstream that
// records what it receives.
type hardenedProxy struct {
	srv  *Server
	up   *testUpstream
	reg  *prometheus.Registry
	mu   sync.Mutex
	seen []http.Header // headers of each request the upstream got
}

func startHardenedProxy(t *testing.T, rc RouteConfig, hc HandlerConfig, sc ServerConfig) *hardenedProxy {
	t.Helper()
	p := &hardenedProxy{reg: prometheus.NewRegistry()}
	p.up = startUpstream(t, "up", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, r.Header.Clone())
		p.mu.Unlock()
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		if r.Header.Get("Upgrade") != "" {
			// An upstream that switches to whatever it is asked.
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\n\r\n")
			brw.Flush()
			return
		}
		io.WriteString(w, "up")
	})
	rc.Upstreams = []string{p.up.URL}
	hc.Routes = []RouteConfig{rc}
	hc.Registerer = p.reg
	sc.Handler = newTestHandler(t, hc)
	p.srv = startServer(t, sc)
	return p
}

func (p *hardenedProxy) addr() string { return p.srv.Addr().String() }

func (p *hardenedProxy) upstreamHeaders() []http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

func (p *hardenedProxy) client(h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr}
}

// get sends a plain GET and returns status and body.
func (p *hardenedProxy) get(t *testing.T) (int, string) {
	t.Helper()
	c := p.client(false)
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + p.addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rawHTTP1 sends raw bytes over a new TLS connection offering http/1.1 and
// reads one response.
func rawHTTP1(t *testing.T, addr, request string) (*http.Response, *bufio.Reader, *tls.Conn) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang fails the test, not CI
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, br, c
}

// h2Conn is a raw HTTP/2 client connection, for frames Go's client would
// never send.
type h2Conn struct {
	t    *testing.T
	conn *tls.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2Conn{t: t, conn: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// headerBlock encodes a request's header fields.
func (h *h2Conn) headerBlock(fields ...string) []byte {
	h.hbuf.Reset()
	base := []string{":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/"}
	fields = append(base, fields...)
	for i := 0; i < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(h.hbuf.Bytes())
}

// status reads frames until stream's response headers, and returns their
// :status, or fails the test if the connection ends first.
func (h *h2Conn) status(stream uint32) int {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading the response of stream %d: %v", stream, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == stream {
				n, _ := strconv.Atoi(f.PseudoValue("status"))
				return n
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == stream {
				h.t.Fatalf("stream %d reset: %v", stream, f.ErrCode)
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				h.t.Fatalf("GOAWAY before the response of stream %d: %v", stream, f.ErrCode)
			}
		}
	}
}

// TestClientBodyErrorsNeverEjectUpstream is issue #11's vulnerability: a
// client's own broken body answered 502 and counted against the upstream, so
// three requests ejected the only upstream for everyone.
func TestClientBodyErrorsNeverEjectUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		send func(t *testing.T, p *hardenedProxy) int
	}{
		{"HTTP/1.1 malformed chunk", func(t *testing.T, p *hardenedProxy) int {
			resp, _, _ := rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
			return resp.StatusCode
		}},
		{"HTTP/1.1 body shorter than Content-Length", func(t *testing.T, p *hardenedProxy) int {
			c, err := tls.Dial("tcp", p.addr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
			c.CloseWrite() // the client is gone half-way: nobody reads an answer
			io.Copy(io.Discard, c)
			return http.StatusBadRequest
		}},
		{"HTTP/2 body shorter than content-length", func(t *testing.T, p *hardenedProxy) int {
			h := dialH2(t, p.addr())
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock("content-length", "100"), EndHeaders: true})
			h.fr.WriteData(1, true, []byte("short"))
			return h.status(1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{}, ServerConfig{})
			for i := range 5 { // more than PassiveEject's default 3
				if code := tt.send(t, p); code != http.StatusBadRequest {
					t.Fatalf("broken body %d: status %d, want 400", i, code)
				}
			}
			if code, body := p.get(t); code != http.StatusOK || body != "up" {
				t.Fatalf("after broken bodies: %d %q, want 200 from the upstream", code, body)
			}
			for _, kind := range []string{ErrorKindTransport, ErrorKindDial, ErrorKindTimeout} {
				if n := metricValue(t, p.reg, "edgeproxy_upstream_errors_total", map[string]string{"kind": kind}); n != 0 {
					t.Errorf("upstream errors of kind %s = %v, want 0: the client's fault was held against the upstream", kind, n)
				}
			}
			if n := metricValue(t, p.reg, "edgeproxy_upstream_healthy", nil); n != 1 {
				t.Errorf("edgeproxy_upstream_healthy = %v, want 1", n)
			}
		})
	}
}

func TestClientBodyErrorsCounted(t *testing.T) {
	t.Parallel()
	p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{}, ServerConfig{})
	for range 2 {
		rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
	}
	if n := metricValue(t, p.reg, "edgeproxy_client_errors_total", map[string]string{"reason": ClientErrorBody}); n != 2 {
		t.Errorf("client errors bad_body = %v, want 2", n)
	}
}

func TestRequestBodyLimits(t *testing.T) {
	t.Parallel()
	p := startHardenedProxy(t, RouteConfig{Limits: RouteLimits{MaxBodyBytes: 10, BodyTimeout: 50 * time.Millisecond, BodyMinRate: 1 << 20}}, HandlerConfig{}, ServerConfig{})

	t.Run("Content-Length over the limit", func(t *testing.T) {
		resp, _, _ := rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nX-Case: cl413\r\nContent-Length: 11\r\n\r\nhello world")
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
	})
	t.Run("chunked over the limit", func(t *testing.T) {
		resp, _, _ := rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n")
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
	})
	t.Run("exactly at the limit", func(t *testing.T) {
		resp, _, _ := rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhelloworld")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d, want 200", resp.StatusCode)
		}
	})
	t.Run("slow body", func(t *testing.T) {
		// Headers and one byte, then nothing: the deadline, not the
		// client, ends the request.
		resp, br, _ := rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nh")
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("status %d, want 408", resp.StatusCode)
		}
		wantClosed(t, br) // not held open while net/http drains the body
	})
	t.Run("slow HTTP/2 body", func(t *testing.T) {
		h := dialH2(t, p.addr())
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock("content-length", "5"), EndHeaders: true})
		h.fr.WriteData(1, false, []byte("h"))
		if code := h.status(1); code != http.StatusRequestTimeout {
			t.Errorf("status %d, want 408", code)
		}
	})
	for reason, want := range map[string]float64{ClientErrorBodyTooLarge: 2, ClientErrorBodyTimeout: 2} {
		if n := metricValue(t, p.reg, "edgeproxy_client_errors_total", map[string]string{"reason": reason}); n != want {
			t.Errorf("client errors %s = %v, want %v", reason, n, want)
		}
	}
	for _, hd := range p.upstreamHeaders() {
		if hd.Get("X-Case") == "cl413" {
			t.Error("a body over the limit by its Content-Length reached the upstream")
		}
	}
}

func TestOversizedHeadersNeverForwarded(t *testing.T) {
	t.Parallel()
	p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{}, ServerConfig{Limits: Limits{MaxHeaderBytes: 4096}})
	// Twelve fields of 1 KiB: each under the limit, together over it, and
	// in one HEADERS frame (over the limit, a CONTINUATION is a protocol
	// error to Go: the connection ends, which forwards nothing either).
	var fields []string
	var h1 strings.Builder
	for i := range 12 {
		name, value := "x-big-"+strconv.Itoa(i), strings.Repeat("a", 1024)
		fields = append(fields, name, value)
		h1.WriteString(name + ": " + value + "\r\n")
	}
	t.Run("HTTP/1.1", func(t *testing.T) {
		resp, _, _ := rawHTTP1(t, p.addr(), "GET / HTTP/1.1\r\nHost: x\r\n"+h1.String()+"\r\n")
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("HTTP/2", func(t *testing.T) {
		h := dialH2(t, p.addr())
		block := h.headerBlock(fields...)
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true, EndStream: true})
		if code := h.status(1); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", code)
		}
	})
	if n := len(p.upstreamHeaders()); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
}

func TestHTTP2LimitsAdvertisedAndHeaderBlockTimeout(t *testing.T) {
	t.Parallel()
	p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{}, ServerConfig{
		Limits:   Limits{HTTP2MaxConcurrentStreams: 7},
		Timeouts: Timeouts{ReadHeader: 100 * time.Millisecond, Idle: time.Hour},
	})
	h := dialH2(t, p.addr())
	f, err := h.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); !ok || v != 7 {
		t.Errorf("MAX_CONCURRENT_STREAMS = %d (sent %v), want 7", v, ok)
	}
	h.fr.WriteSettingsAck()

	// A header block that never ends: the connection must close long
	// before the hour of idle timeout.
	block := h.headerBlock("x-a", "b")
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:len(block)/2], EndHeaders: false})
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("connection with an unfinished header block still open after 30s")
			}
			return // closed by the server
		}
		if pf, ok := f.(*http2.PingFrame); ok && !pf.IsAck() {
			continue // answering would itself be a protocol error mid-block
		}
	}
}

func TestUpgradePolicy(t *testing.T) {
	t.Parallel()
	p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{}, ServerConfig{})
	resp, _, _ := rawHTTP1(t, p.addr(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatal("h2c upgrade was tunnelled")
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200 (served as a plain request)", resp.StatusCode)
	}
	for _, hd := range p.upstreamHeaders() {
		if up := hd.Get("Upgrade"); up != "" {
			t.Errorf("upstream saw Upgrade: %q", up)
		}
	}
	// websocket still passes by default.
	resp, _, _ = rawHTTP1(t, p.addr(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("websocket upgrade: status %d, want 101", resp.StatusCode)
	}
}

func TestProxyHeadersStripped(t *testing.T) {
	t.Parallel()
	forged := map[string]string{
		"X-TLS-Session-ID": "forged1",
		"x-tls-session-id": "forged2",
		"X_TLS_Session_ID": "forged3",
		"x_tls_session_id": "forged4",
		"X-Real-IP":        "6.6.6.6",
		"X_Real_IP":        "6.6.6.6",
		"X_Forwarded_For":  "6.6.6.6",
		"Forwarded":        "for=6.6.6.6",
		"X_Custom":         "kept only on request",
	}
	var req strings.Builder
	req.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for k, v := range forged {
		req.WriteString(k + ": " + v + "\r\n")
	}
	req.WriteString("\r\n")
	for _, keep := range []bool{false, true} {
		t.Run("underscores kept "+strconv.FormatBool(keep), func(t *testing.T) {
			t.Parallel()
			p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{ProxyHeaders: []string{"X-TLS-Session-ID"}, KeepUnderscoreHeaders: keep}, ServerConfig{})
			rawHTTP1(t, p.addr(), req.String())
			seen := p.upstreamHeaders()
			if len(seen) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(seen))
			}
			custom := false
			for name, vals := range seen[0] {
				switch k := canonicalKey(name); {
				case k == "x-custom":
					custom = true
				case k == "x-real-ip" || k == "x-forwarded-for":
					if len(vals) != 1 || vals[0] != "127.0.0.1" {
						t.Errorf("upstream saw %s: %q, want the client address only", name, vals)
					}
				case strings.Contains(strings.Join(vals, ","), "forged") || strings.Contains(strings.Join(vals, ","), "6.6.6.6"):
					t.Errorf("forged header reached the upstream: %s: %q", name, vals)
				}
			}
			if custom != keep {
				t.Errorf("X_Custom forwarded = %v, want %v", custom, keep)
			}
			if seen[0].Get("X-Real-Ip") != "127.0.0.1" {
				t.Errorf("X-Real-IP = %q, want 127.0.0.1", seen[0].Get("X-Real-Ip"))
			}
		})
	}
}

func TestChunkedHTTP1RequestClosesConnection(t *testing.T) {
	t.Parallel()
	p := startHardenedProxy(t, RouteConfig{}, HandlerConfig{}, ServerConfig{})
	resp, br, _ := rawHTTP1(t, p.addr(), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if !resp.Close {
		t.Error("response to a Content-Length + Transfer-Encoding request does not announce Connection: close")
	}
	wantClosed(t, br)
}

// wantClosed fails unless the server closes the connection br reads, within
// rawHTTP1's 30 s deadline.
func wantClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	_, err := br.ReadByte()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("connection still open 30s after the response")
	case err == nil:
		t.Fatal("more bytes after the response, want the connection closed")
	}
}

func TestUpstreamTransportLimits(t *testing.T) {
	t.Parallel()
	tr := newUpstreamTransport(&RouteConfig{}, nil)
	if tr.std.MaxConnsPerHost != DefaultMaxConnsPerUpstream || tr.std.MaxIdleConnsPerHost != DefaultMaxIdleConnsPerUpstream {
		t.Errorf("defaults: MaxConnsPerHost %d, MaxIdleConnsPerHost %d", tr.std.MaxConnsPerHost, tr.std.MaxIdleConnsPerHost)
	}
	if tr.cfg.maxConns != DefaultMaxConnsPerUpstream || tr.cfg.maxIdle != DefaultMaxIdleConnsPerUpstream {
		t.Errorf("defaults, HTTP/1.1 pool: maxConns %d, maxIdle %d", tr.cfg.maxConns, tr.cfg.maxIdle)
	}
	tr = newUpstreamTransport(&RouteConfig{Limits: RouteLimits{MaxConnsPerUpstream: 3, MaxIdleConnsPerUpstream: 2}}, nil)
	if tr.std.MaxConnsPerHost != 3 || tr.std.MaxIdleConnsPerHost != 2 {
		t.Errorf("configured 3/2: MaxConnsPerHost %d, MaxIdleConnsPerHost %d", tr.std.MaxConnsPerHost, tr.std.MaxIdleConnsPerHost)
	}
	if tr.cfg.maxConns != 3 || tr.cfg.maxIdle != 2 {
		t.Errorf("configured 3/2, HTTP/1.1 pool: maxConns %d, maxIdle %d", tr.cfg.maxConns, tr.cfg.maxIdle)
	}
}
