package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/websocket"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// startNode starts an in-process node on loopback ports and stops it when
// the test ends.
func startNode(t testing.TB, cfg config.Config) *App {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Admin == nil {
		admin := "127.0.0.1:0"
		cfg.Admin = &admin
	}
	a, err := New(Options{Config: &cfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a
}

func clientFor(h2 bool, cache tls.ClientSessionCache) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache},
		ForceAttemptHTTP2: h2,
		DisableKeepAlives: true,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func getReply(t *testing.T, c *http.Client, url string) (demoapp.Reply, *http.Response) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var r demoapp.Reply
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("GET %s: decoding %q: %v", url, body, err)
		}
	}
	return r, resp
}

// metric returns the value of one sample from the node's /metrics page.
func metric(t *testing.T, a *App, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	up1 := httptest.NewServer(demoapp.Handler("up1"))
	defer up1.Close()
	up2 := httptest.NewServer(demoapp.Handler("up2"))
	defer up2.Close()
	ws := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	defer ws.Close()

	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{
		{PathPrefix: "/ws", Upstreams: []string{ws.URL}},
		{Upstreams: []string{up1.URL, up2.URL}},
	}})
	base := "https://" + a.Addr().String()

	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			seen := map[string]bool{}
			for i := 0; i < 4; i++ {
				r, resp := getReply(t, clientFor(h2, nil), base+"/hello")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
					t.Fatalf("client spoke HTTP/%d, want HTTP/%d", resp.ProtoMajor, want)
				}
				if r.Path != "/hello" || r.ForwardedProto != "https" || r.ForwardedFor != "127.0.0.1" || r.ForwardedHost != a.Addr().String() {
					t.Fatalf("upstream saw %+v", r)
				}
				seen[r.App] = true
			}
			if !seen["up1"] || !seen["up2"] {
				t.Fatalf("round robin reached only %v", seen)
			}
		})
	}

	t.Run("websocket", func(t *testing.T) {
		wcfg, err := websocket.NewConfig("wss://"+a.Addr().String()+"/ws", "https://client.test/")
		if err != nil {
			t.Fatal(err)
		}
		wcfg.TlsConfig = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
		conn, err := websocket.DialConfig(wcfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("ping through edgeproxy")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != "ping through edgeproxy" {
			t.Fatalf("echo = %q, %v", buf[:n], err)
		}
	})

	t.Run("metrics count handshakes and resumption", func(t *testing.T) {
		before := metric(t, a, `edgeproxy_tls_handshakes_total{resumed="true",version="1.3"}`)
		cache := tls.NewLRUClientSessionCache(4)
		c := clientFor(false, cache)
		for i := 0; i < 3; i++ {
			_, resp := getReply(t, c, base+"/")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		after := metric(t, a, `edgeproxy_tls_handshakes_total{resumed="true",version="1.3"}`)
		if after-before != 2 {
			t.Fatalf("resumed TLS 1.3 handshakes went from %v to %v, want +2", before, after)
		}
		if full := metric(t, a, `edgeproxy_tls_handshakes_total{resumed="false",version="1.3"}`); full < 9 {
			t.Fatalf("full TLS 1.3 handshakes = %v, want at least the 9 made", full)
		}
		if got := metric(t, a, `edgeproxy_resumption_unwrap_total{mode="tickets",result="opened"}`); got < 2 {
			t.Fatalf("unwrap opened = %v, want >= 2", got)
		}
	})
}

func TestDeadUpstreams(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(demoapp.Handler("alive"))
	defer up.Close()
	dead := deadAddr(t)
	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{
		{PathPrefix: "/mixed", Upstreams: []string{"http://" + dead, up.URL}},
		{PathPrefix: "/alldead", Upstreams: []string{"http://" + dead}},
	}})
	base := "https://" + a.Addr().String()
	c := clientFor(false, nil)
	for i := 0; i < 6; i++ {
		r, resp := getReply(t, c, base+"/mixed")
		if resp.StatusCode != http.StatusOK || r.App != "alive" {
			t.Fatalf("request %d with one dead upstream: status %d from %q", i, resp.StatusCode, r.App)
		}
	}
	for i := 0; i < 5; i++ {
		_, resp := getReply(t, c, base+"/alldead")
		if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("all upstreams dead: status %d, want 502 or 503", resp.StatusCode)
		}
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestHandshakeFailuresAreCounted(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	a := startNode(t, config.Config{TLS: config.TLS{MinVersion: "1.3"}, Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}})
	addr := a.Addr().String()

	// Plain HTTP on the TLS port.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, c)
	c.Close()
	// A TLS 1.2-only client against a TLS 1.3 minimum.
	if err := testserver.Handshake(t, addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("TLS 1.2 client connected to a TLS 1.3-only listener")
	}
	// The server counts a failure before it closes the connection, and
	// both clients above waited for the close: the counts are in.
	for reason, n := range map[string]float64{proxy.ReasonBadClientHello: 1, proxy.ReasonVersion: 1} {
		name := `edgeproxy_tls_handshake_errors_total{reason="` + reason + `"}`
		if got := metric(t, a, name); got != n {
			t.Errorf("%s = %v, want %v", name, got, n)
		}
	}
}

func TestReloadKeepsOldConfigOnError(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	cfg := config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}}
	a := startNode(t, cfg)
	a.opts.Config.Routes = []proxy.RouteConfig{{Upstreams: []string{"htp://broken"}}}
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "routes[0].upstreams[0]") {
		t.Fatalf("Reload = %v, want a validation error naming routes[0].upstreams[0]", err)
	}
	r, resp := getReply(t, clientFor(true, nil), "https://"+a.Addr().String()+"/")
	if resp.StatusCode != http.StatusOK || r.App != "up" {
		t.Fatalf("after a failed reload: %d from %q", resp.StatusCode, r.App)
	}
	// A good reload moves traffic to the new upstream.
	up2 := httptest.NewServer(demoapp.Handler("up2"))
	defer up2.Close()
	a.opts.Config.Routes = []proxy.RouteConfig{{Upstreams: []string{up2.URL}}}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	r, _ = getReply(t, clientFor(true, nil), "https://"+a.Addr().String()+"/")
	if r.App != "up2" {
		t.Fatalf("after reload the request went to %q, want up2", r.App)
	}
}

// TestReloadAppliesRoutesWhenKeysFail: a ticket key reload that fails (a
// broken key file here, a Redis outage in production) must not hold back
// the rest of the reload.
func TestReloadAppliesRoutesWhenKeysFail(t *testing.T) {
	t.Parallel()
	up1 := httptest.NewServer(demoapp.Handler("up1"))
	defer up1.Close()
	up2 := httptest.NewServer(demoapp.Handler("up2"))
	defer up2.Close()
	keyFile := filepath.Join(t.TempDir(), "ticket.key")
	writeKeys(t, keyFile, newKey(t))
	a := startNode(t, config.Config{
		Routes:     []proxy.RouteConfig{{Upstreams: []string{up1.URL}}},
		Resumption: config.Resumption{TicketKeys: config.TicketKeys{Source: "file", Files: []string{keyFile}}},
	})
	if err := os.WriteFile(keyFile, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.opts.Config.Routes = []proxy.RouteConfig{{Upstreams: []string{up2.URL}}}
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "ticket keys not reloaded") {
		t.Fatalf("Reload = %v, want it to report the ticket key failure", err)
	}
	r, _ := getReply(t, clientFor(true, nil), "https://"+a.Addr().String()+"/")
	if r.App != "up2" {
		t.Fatalf("after a reload whose keys failed the request went to %q, want up2", r.App)
	}
	// The old ring is still in force: sessions keep resuming.
	cache := tls.NewLRUClientSessionCache(1)
	connect(t, a.Addr().String(), tls.VersionTLS13, cache)
	if !connect(t, a.Addr().String(), tls.VersionTLS13, cache) {
		t.Fatal("no resumption after a failed key reload")
	}
}
