package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// benchHandler builds a Handler as a node runs it: metrics on, the access
// log on (JSON, written to io.Discard), a session-ID header to strip. With a
// nil transport it proxies to upstream over loopback.
func benchHandler(tb testing.TB, upstream string, transport http.RoundTripper) (*Handler, *http.Request) {
	h, err := NewHandler(HandlerConfig{
		Routes:       []RouteConfig{{Upstreams: []string{upstream}}},
		Registerer:   prometheus.NewRegistry(),
		AccessLog:    zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel)),
		ProxyHeaders: []string{"X-TLS-Session-ID"},
		Transport:    transport,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Stop)
	req := httptest.NewRequest("GET", "https://example.com/path?q=1", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	return h, req
}

// cannedTransport answers every request at once from memory.
var cannedTransport = transportFunc(func(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Length": {"2"}}, ContentLength: 2,
		Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
})

// BenchmarkProxyRequest measures one proxied GET through Handler.ServeHTTP to
// a loopback upstream over a kept-alive connection (the upstream server's own
// allocations included).
func BenchmarkProxyRequest(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	h, req := benchHandler(b, up.URL, nil)
	serveLoop(b, h, req)
}

// BenchmarkProxyRequestCannedUpstream is BenchmarkProxyRequest with an
// upstream that allocates nothing per request (cannedUpstream): allocs/op
// are edgeproxy's alone, the upstream connection pool's included.
func BenchmarkProxyRequestCannedUpstream(b *testing.B) {
	h, req := benchHandler(b, cannedUpstream(b), nil)
	serveLoop(b, h, req.WithContext(b.Context())) // cancelable, as a server's
}

// cannedUpstream starts an HTTP/1.1 upstream on loopback that answers every
// request without a body with the same short response, allocating nothing
// per request, and returns its URL.
func cannedUpstream(tb testing.TB) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
	end := []byte("\r\n\r\n")
	ln := testserver.ServeTCP(tb, new(atomic.Int64), func(c net.Conn) {
		buf := make([]byte, 16<<10)
		var n int
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			for {
				i := bytes.Index(buf[:n], end)
				if i < 0 {
					break
				}
				n = copy(buf, buf[i+len(end):n])
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
	return "http://" + ln.Addr().String()
}

// BenchmarkHandlerOverhead is BenchmarkProxyRequest with the upstream
// replaced by a transport that answers at once from memory: what remains is
// edgeproxy's own cost per request (routing, header policy, ReverseProxy,
// metrics, access log) plus the canned response's few allocations.
func BenchmarkHandlerOverhead(b *testing.B) {
	h, req := benchHandler(b, "http://127.0.0.1:1", cannedTransport)
	serveLoop(b, h, req)
}

// serveLoop serves req with h b.N times to a writer that keeps nothing.
func serveLoop(b *testing.B, h *Handler, req *http.Request) {
	w := &discardWriter{}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// TestHandlerAllocationBudget guards what BenchmarkHandlerOverhead reports:
// allocations per request, and bytes, which catch a 32 KiB copy buffer
// allocated per response (ReverseProxy without a BufferPool). It counts; it
// does not time.
func TestHandlerAllocationBudget(t *testing.T) {
	h, req := benchHandler(t, "http://127.0.0.1:1", cannedTransport)
	w := &discardWriter{}
	serve := func() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	serve() // warm the pools and the metrics' children
	const runs = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	allocs := testing.AllocsPerRun(runs, serve)
	runtime.ReadMemStats(&after)
	bytes := (after.TotalAlloc - before.TotalAlloc) / (runs + 1) // AllocsPerRun adds a warm-up run
	t.Logf("%.0f allocs, %d bytes per request", allocs, bytes)
	// Measured: 15 allocations and 3.0 KiB (28 and 3.2 KiB through
	// httputil.ReverseProxy, issue #13); under -race sync.Pool drops a
	// quarter of what is put back, so 16 and 11 KiB. Without the pool:
	// 36 KiB.
	budget := 15.0
	if raceEnabled {
		budget++
	}
	if allocs > budget {
		t.Errorf("%.0f allocations per proxied request, budget %.0f", allocs, budget)
	}
	if bytes > 16<<10 {
		t.Errorf("%d bytes allocated per proxied request, budget 16 KiB", bytes)
	}
}

// TestProxiedRequestAllocationBudget guards what
// BenchmarkProxyRequestCannedUpstream reports: allocations per request
// proxied to a real upstream over a kept-alive connection, which
// TestHandlerAllocationBudget's canned transport leaves out. It counts; it
// does not time.
func TestProxiedRequestAllocationBudget(t *testing.T) {
	h, req := benchHandler(t, cannedUpstream(t), nil)
	req = req.WithContext(t.Context()) // cancelable, as a server's: the pool watches it
	w := &discardWriter{}
	serve := func() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	serve() // dial, warm the pools
	allocs := testing.AllocsPerRun(200, serve)
	t.Logf("%.0f allocs per proxied request", allocs)
	// Measured: 9, 10 under -race (sync.Pool), since the pool watches
	// the request's context only when an exchange may block and takes
	// got1xx as an interface; 13 with forward and parseBufferedResponse;
	// 35 (3.5 KiB) through httputil.ReverseProxy and http.ReadResponse
	// with the pool of upstream_h1.go; 67 (5.7 KiB) with http.Transport
	// (issue #13).
	budget := 9.0
	if raceEnabled {
		budget++
	}
	if allocs > budget {
		t.Errorf("%.0f allocations per proxied request, budget %.0f", allocs, budget)
	}
}
