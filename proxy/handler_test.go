package proxy

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/websocket"
)

// testUpstream is a real upstream server that counts the requests it serves
// (health checks aside) and names itself in the X-Backend response header.
type testUpstream struct {
	*httptest.Server
	name   string
	hits   atomic.Int64
	health atomic.Int64 // status for GET /healthz; 0 means 200
}

// startUpstream starts an upstream; h may be nil to answer with its name.
func startUpstream(t *testing.T, name string, h http.HandlerFunc) *testUpstream {
	t.Helper()
	u := &testUpstream{name: name}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(cmp.Or(int(u.health.Load()), http.StatusOK))
			return
		}
		u.hits.Add(1)
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(u.Close)
	return u
}

// deadUpstreamURL returns an http URL on which nothing listens.
func deadUpstreamURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// transportFunc is a RoundTripper made of a function, to inject faults.
type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// dialRefused is the error the upstream transport returns for a refused
// connection.
func dialRefused(addr string) error {
	return &DialError{Addr: addr, Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused (injected)"),
		Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}}
}

func newTestHandler(t *testing.T, cfg HandlerConfig) *Handler {
	t.Helper()
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	t.Cleanup(h.Stop)
	return h
}

// serveProxy serves h over TLS, so requests reach it with r.TLS set.
func serveProxy(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	return ts
}

type proxyResponse struct {
	status  int
	body    string
	backend string
}

func doRequest(t *testing.T, ts *httptest.Server, method, path, body string) proxyResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return proxyResponse{status: resp.StatusCode, body: string(b), backend: resp.Header.Get("X-Backend")}
}

// ejectClock is a settable clock for HandlerConfig.Now.
type ejectClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *ejectClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *ejectClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// metricValue returns the value of the counter or gauge name with labels, or
// 0 if there is no such series.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			return metricNumber(m)
		}
	}
	return 0
}

func metricNumber(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestHandlerNoRoute(t *testing.T) {
	b := startUpstream(t, "b", nil)
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{
		{Hosts: []string{"example.com"}, Upstreams: []string{b.URL}},
	}})
	ts := serveProxy(t, h)
	got := doRequest(t, ts, http.MethodGet, "/", "")
	if got.status != http.StatusNotFound || !strings.Contains(got.body, "no route") {
		t.Errorf("unrouted host: got %d %q, want 404 with \"no route\"", got.status, got.body)
	}
	if b.hits.Load() != 0 {
		t.Errorf("upstream hit %d times for an unrouted request", b.hits.Load())
	}
}

func TestHandlerRoutesByHostAndPrefix(t *testing.T) {
	web := startUpstream(t, "web", nil)
	api := startUpstream(t, "api", nil)
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{
		{Upstreams: []string{web.URL}},
		{PathPrefix: "/api", Upstreams: []string{api.URL}},
	}})
	ts := serveProxy(t, h)
	for _, tt := range []struct{ path, want string }{
		{"/", "web"}, {"/api", "api"}, {"/api/v1", "api"}, {"/apix", "web"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			if got := doRequest(t, ts, http.MethodGet, tt.path, ""); got.status != 200 || got.backend != tt.want {
				t.Errorf("GET %s: got %d from %q, want 200 from %q", tt.path, got.status, got.backend, tt.want)
			}
		})
	}
}

func TestHandlerForwardedHeaders(t *testing.T) {
	for _, rewrite := range []bool{false, true} {
		t.Run(fmt.Sprintf("rewrite_host %v", rewrite), func(t *testing.T) { testForwardedHeaders(t, rewrite) })
	}
}

// testForwardedHeaders checks what the upstream sees: X-Forwarded-*, set by
// the proxy alone, and the client's Host, or the upstream's own with
// rewrite_host.
func testForwardedHeaders(t *testing.T, rewriteHost bool) {
	type seen struct{ xff, proto, xfh, host, path, query, hook string }
	got := make(chan seen, 1)
	b := startUpstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-Host"), r.Host, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Hook")}
	})
	h := newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{Upstreams: []string{b.URL + "/base"}, RewriteHost: rewriteHost}},
		RequestHook: func(pr *httputil.ProxyRequest) {
			pr.Out.Header.Set("X-Hook", fmt.Sprint(pr.In.TLS != nil))
		},
	})
	ts := serveProxy(t, h)
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/x?q=1", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")  // spoofed: must not reach the upstream
	req.Header.Set("X-Forwarded-Proto", "gopher") // likewise
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s := <-got
	want := seen{
		xff:   "127.0.0.1",
		proto: "https",
		xfh:   strings.TrimPrefix(ts.URL, "https://"),
		host:  strings.TrimPrefix(ts.URL, "https://"), // preserved

		path:  "/base/api/x",
		query: "q=1",
		hook:  "true",
	}
	if rewriteHost {
		want.host = strings.TrimPrefix(b.URL, "http://")
	}
	if s != want {
		t.Errorf("upstream saw %+v\nwant           %+v", s, want)
	}
}

func TestHandlerRetriesOnlyBeforeSend(t *testing.T) {
	// closer reads the request, sends half a status line and hangs up.
	closer := startUpstream(t, "closer", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		brw.WriteString("HTTP/1.1 200 O")
		brw.Flush()
		conn.Close()
	})
	tests := []struct {
		name       string
		first      string // URL of the upstream tried first
		transport  func(next http.RoundTripper) http.RoundTripper
		method     string
		body       string
		wantStatus int
		wantHits   int64 // requests the healthy second upstream served
	}{
		{name: "dead first GET", first: deadUpstreamURL(t), method: "GET", wantStatus: 200, wantHits: 1},
		{name: "dead first POST", first: deadUpstreamURL(t), method: "POST", body: "hello body", wantStatus: 200, wantHits: 1},
		{name: "closed mid-response GET", first: closer.URL, method: "GET", wantStatus: 502},
		{name: "closed mid-response POST", first: closer.URL, method: "POST", body: "hello body", wantStatus: 502},
		{
			name: "dial error after body read", first: "http://first.invalid", method: "POST", body: "hello body",
			transport: func(next http.RoundTripper) http.RoundTripper {
				return transportFunc(func(r *http.Request) (*http.Response, error) {
					if r.URL.Host == "first.invalid" {
						io.Copy(io.Discard, r.Body) // bytes went out: no retry allowed
						return nil, dialRefused(r.URL.Host)
					}
					return next.RoundTrip(r)
				})
			},
			wantStatus: 502,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bodies []string
			var mu sync.Mutex
			second := startUpstream(t, "second", func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(b))
				mu.Unlock()
				io.WriteString(w, "second")
			})
			cfg := HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{tt.first, second.URL}}}}
			if tt.transport != nil {
				cfg.Transport = tt.transport(newUpstreamTransport(&RouteConfig{}, nil))
			}
			ts := serveProxy(t, newTestHandler(t, cfg))
			got := doRequest(t, ts, tt.method, "/", tt.body)
			if got.status != tt.wantStatus {
				t.Errorf("status %d (%q), want %d", got.status, got.body, tt.wantStatus)
			}
			if n := second.hits.Load(); n != tt.wantHits {
				t.Errorf("second upstream served %d requests, want %d", n, tt.wantHits)
			}
			if tt.body != "" && tt.wantHits == 1 && (len(bodies) != 1 || bodies[0] != tt.body) {
				t.Errorf("second upstream got bodies %q, want exactly [%q]", bodies, tt.body)
			}
			if tt.wantStatus == 502 && !strings.Contains(got.body, "bad gateway") {
				t.Errorf("502 body %q does not say bad gateway", got.body)
			}
		})
	}
}

func TestHandlerAllDialsFail(t *testing.T) {
	reg := prometheus.NewRegistry()
	dead1, dead2 := deadUpstreamURL(t), deadUpstreamURL(t)
	h := newTestHandler(t, HandlerConfig{
		Routes:     []RouteConfig{{Upstreams: []string{dead1, dead2}, PassiveEject: PassiveEjectConfig{Disabled: true}}},
		Registerer: reg,
	})
	ts := serveProxy(t, h)
	if got := doRequest(t, ts, "GET", "/", ""); got.status != http.StatusBadGateway {
		t.Errorf("status %d, want 502", got.status)
	}
	for _, u := range []string{dead1, dead2} {
		if n := metricValue(t, reg, "edgeproxy_upstream_errors_total", map[string]string{"upstream": u, "kind": "dial"}); n != 1 {
			t.Errorf("dial errors for %s = %v, want 1 (each upstream tried once)", u, n)
		}
	}
}

func TestHandlerResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	slow := startUpstream(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		<-release
	})
	t.Cleanup(func() { close(release) }) // runs before slow.Close
	reg := prometheus.NewRegistry()
	h := newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{
			Upstreams: []string{slow.URL},
			Timeouts:  UpstreamTimeouts{ResponseHeaderTimeout: 50 * time.Millisecond},
		}},
		Registerer: reg,
	})
	ts := serveProxy(t, h)
	got := doRequest(t, ts, "GET", "/", "")
	if got.status != http.StatusGatewayTimeout || !strings.Contains(got.body, "gateway timeout") {
		t.Errorf("got %d %q, want 504 gateway timeout", got.status, got.body)
	}
	if n := metricValue(t, reg, "edgeproxy_upstream_errors_total", map[string]string{"upstream": slow.URL, "kind": "timeout"}); n != 1 {
		t.Errorf("timeout errors = %v, want 1", n)
	}
}

func TestHandlerWebSocketEcho(t *testing.T) {
	echo := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	t.Cleanup(echo.Close)
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{echo.URL}}}})
	ts := serveProxy(t, h)

	cfg, err := websocket.NewConfig(strings.Replace(ts.URL, "https", "wss", 1)+"/ws", "https://client.example/")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	cfg.TlsConfig = &tls.Config{RootCAs: roots}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("websocket through the proxy: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "world"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Errorf("echo = %q, want %q", got, msg)
		}
	}
}

func TestHandlerMetrics(t *testing.T) {
	b := startUpstream(t, "b", nil)
	reg := prometheus.NewRegistry()
	cfg := HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{b.URL}}}, Registerer: reg}
	ts := serveProxy(t, newTestHandler(t, cfg))
	for range 3 {
		doRequest(t, ts, "GET", "/", "")
	}
	if n := metricValue(t, reg, "edgeproxy_upstream_requests_total", map[string]string{"upstream": b.URL, "code": "200"}); n != 3 {
		t.Errorf("requests_total{code=200} = %v, want 3", n)
	}
	if n := metricValue(t, reg, "edgeproxy_upstream_request_duration_seconds", map[string]string{"upstream": b.URL}); n != 3 {
		t.Errorf("duration samples = %v, want 3", n)
	}
	if v := metricValue(t, reg, "edgeproxy_upstream_healthy", map[string]string{"upstream": b.URL}); v != 1 {
		t.Errorf("healthy = %v, want 1", v)
	}
	// A second handler on the same registry (a reload) shares the collectors.
	if _, err := NewHandler(cfg); err != nil {
		t.Errorf("second NewHandler on the same registry: %v", err)
	}
}

func TestNewHandlerRejectsInvalidRoutes(t *testing.T) {
	_, err := NewHandler(HandlerConfig{Routes: []RouteConfig{{Balance: "random", Upstreams: []string{"http://a"}}}})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "routes[0].balance" {
		t.Fatalf("NewHandler error = %v, want a *FieldError for routes[0].balance", err)
	}
}

func ExampleNewHandler() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from upstream, proto %s", r.Header.Get("X-Forwarded-Proto"))
	}))
	defer upstream.Close()

	h, err := NewHandler(HandlerConfig{
		Routes: []RouteConfig{{Hosts: []string{"*.example.com"}, Upstreams: []string{upstream.URL}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	h.Start()
	defer h.Stop()

	req := httptest.NewRequest("GET", "https://www.example.com/", nil) // r.TLS is set
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Body.String())
	// Output: 200 hello from upstream, proto https
}
