package proxy

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// startAdmin runs an admin listener on a free loopback port until the test
// ends.
func startAdmin(t *testing.T, cfg AdminConfig) *Admin {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	a, err := StartAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a
}

// adminDo sends one request to a and returns the response with its body
// read.
func adminDo(t *testing.T, a *Admin, method, path, host, auth string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.Addr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func adminWithRoutes(token string, hosts ...string) AdminConfig {
	return AdminConfig{
		Gatherer: prometheus.NewRegistry(),
		Pprof:    true,
		Handlers: map[string]http.Handler{"DELETE /sessions/{id}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		})},
		Token: token,
		Hosts: hosts,
	}
}

func TestAdminTokenGuardsMutatingRoutesAndPprof(t *testing.T) {
	t.Parallel()
	const token = "0123456789abcdef-admin"
	a := startAdmin(t, adminWithRoutes(token))
	tests := []struct {
		name, method, path, auth string
		want                     int
	}{
		{"revoke without token", "DELETE", "/sessions/ab", "", http.StatusUnauthorized},
		{"revoke with a wrong token", "DELETE", "/sessions/ab", "Bearer wrong", http.StatusUnauthorized},
		{"revoke with a prefix of the token", "DELETE", "/sessions/ab", "Bearer " + token[:len(token)-1], http.StatusUnauthorized},
		{"revoke with the token as basic auth", "DELETE", "/sessions/ab", "Basic " + token, http.StatusUnauthorized},
		{"revoke with the token", "DELETE", "/sessions/ab", "Bearer " + token, http.StatusNoContent},
		{"revoke with a lowercase scheme", "DELETE", "/sessions/ab", "bearer " + token, http.StatusNoContent},
		{"pprof without token", "GET", "/debug/pprof/", "", http.StatusUnauthorized},
		{"pprof cmdline without token", "GET", "/debug/pprof/cmdline", "", http.StatusUnauthorized},
		{"pprof with a wrong token", "GET", "/debug/pprof/cmdline", "Bearer wrong", http.StatusUnauthorized},
		{"pprof with the token", "GET", "/debug/pprof/cmdline", "Bearer " + token, http.StatusOK},
		{"metrics stay open", "GET", "/metrics", "", http.StatusOK},
		{"healthz stays open", "GET", "/healthz", "", http.StatusOK},
		{"readyz stays open", "GET", "/readyz", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := adminDo(t, a, tt.method, tt.path, "", tt.auth)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s: %d %q, want %d", tt.method, tt.path, resp.StatusCode, body, tt.want)
			}
			if got := resp.Header.Get("WWW-Authenticate"); (tt.want == http.StatusUnauthorized) != strings.HasPrefix(got, "Bearer") {
				t.Fatalf("%d with WWW-Authenticate %q", resp.StatusCode, got)
			}
		})
	}
}

// TestAdminWithoutTokenIsOpen: the token is optional; without one the
// routes answer as before.
func TestAdminWithoutTokenIsOpen(t *testing.T) {
	t.Parallel()
	a := startAdmin(t, adminWithRoutes(""))
	if resp, body := adminDo(t, a, "DELETE", "/sessions/ab", "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke without a configured token: %d %q, want 204", resp.StatusCode, body)
	}
}

// TestAdminHostCheck: a page on evil.example that rebinds its DNS name to
// the admin address sends Host: evil.example, and reads nothing.
func TestAdminHostCheck(t *testing.T) {
	t.Parallel()
	const token = "t0ken"
	a := startAdmin(t, adminWithRoutes(token, "Admin.Internal"))
	port := a.Addr().(*net.TCPAddr).Port
	tests := []struct {
		host string
		want int
	}{
		{"evil.example", http.StatusMisdirectedRequest},
		{fmt.Sprintf("evil.example:%d", port), http.StatusMisdirectedRequest},
		{"localhost.evil.example", http.StatusMisdirectedRequest},
		{"127.0.0.1.evil.example", http.StatusMisdirectedRequest},
		{fmt.Sprintf("127.0.0.1:%d", port), http.StatusOK},
		{fmt.Sprintf("[::1]:%d", port), http.StatusOK},
		{"10.1.2.3", http.StatusOK},
		{fmt.Sprintf("localhost:%d", port), http.StatusOK},
		{"LOCALHOST.", http.StatusOK},
		{"admin.internal", http.StatusOK},
		{fmt.Sprintf("ADMIN.internal.:%d", port), http.StatusOK},
	}
	for _, tt := range tests {
		for _, path := range []string{"/metrics", "/healthz", "/debug/pprof/cmdline"} {
			resp, body := adminDo(t, a, "GET", path, tt.host, "Bearer "+token)
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s with Host %q: %d %q, want %d", path, tt.host, resp.StatusCode, body, tt.want)
			}
		}
	}
	// HTTP/1.0 without a Host (HAProxy's httpchk) is no browser: served.
	c, err := net.Dial("tcp", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /healthz HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/1.0 without Host: %d, want 200", resp.StatusCode)
	}
}

// TestAdminSlowlorisIsCut: a client that sends half a request line and
// then nothing is disconnected after the read-header timeout. The read
// deadline below is only a bound on a broken test: it is well above the
// configured timeout and below DefaultAdminReadHeaderTimeout, so a server
// that ignored Timeouts fails the test instead of passing late.
func TestAdminSlowlorisIsCut(t *testing.T) {
	t.Parallel()
	a := startAdmin(t, AdminConfig{Timeouts: AdminTimeouts{ReadHeader: 100 * time.Millisecond}})
	c, err := net.Dial("tcp", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HT"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(DefaultAdminReadHeaderTimeout - time.Second))
	// Go answers "400 Bad Request" to the cut request line, then closes:
	// ReadAll ends without error only at EOF.
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read on a half-sent request: %v after %q; want the server to close the connection (EOF)", err, got)
	}
	t.Logf("server answered %q and closed", got)
}

// TestAdminPprofProfileOutlivesTimeouts: /debug/pprof/profile?seconds=2
// runs for its whole two seconds and returns a complete profile although
// the read and write timeouts are shorter. pprof extends the write
// deadline to WriteTimeout + seconds from the request's start, so the
// write timeout is also the margin left for writing the profile on a
// loaded machine (100 ms was not always enough under -race).
func TestAdminPprofProfileOutlivesTimeouts(t *testing.T) {
	t.Parallel()
	a := startAdmin(t, AdminConfig{Pprof: true, Timeouts: AdminTimeouts{
		ReadHeader: 100 * time.Millisecond, Read: 100 * time.Millisecond, Write: time.Second,
	}})
	resp, body := adminDo(t, a, "GET", "/debug/pprof/profile?seconds=2", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("profile: %d %q", resp.StatusCode, body)
	}
	d, err := profileDuration(body)
	if err != nil {
		t.Fatalf("profile of %d bytes: %v", len(body), err)
	}
	// The profile's own record of its length may fall a hair short of 2s
	// (1.999s seen); a cut would end it at the 1s write timeout.
	if d < 1500*time.Millisecond {
		t.Fatalf("profile covers %v, want the 2s asked for (the request was cut short)", d)
	}
}

// profileDuration returns the duration_nanos field (10) of a gzipped
// pprof profile.proto, reading the protobuf wire format directly.
func profileDuration(gz string) (time.Duration, error) {
	zr, err := gzip.NewReader(strings.NewReader(gz))
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return 0, err
	}
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, errors.New("bad field key")
		}
		b = b[n:]
		switch key & 7 {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return 0, errors.New("bad varint")
			}
			if key>>3 == 10 {
				return time.Duration(v), nil
			}
			b = b[n:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return 0, errors.New("bad length")
			}
			b = b[n+int(l):]
		default:
			return 0, fmt.Errorf("unexpected wire type %d", key&7)
		}
	}
	return 0, errors.New("no duration_nanos")
}

// reportedAddr is a listener that reports another address than its own:
// the only way to see the non-loopback warning without binding beyond
// loopback on a shared machine.
type reportedAddr struct {
	net.Listener
	addr net.Addr
}

func (l reportedAddr) Addr() net.Addr { return l.addr }

func TestAdminWarnsBeyondLoopback(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ip   string
		warn bool
	}{
		{"127.0.0.1", false}, {"127.1.2.3", false}, {"::1", false},
		{"0.0.0.0", true}, {"::", true}, {"192.0.2.10", true},
	} {
		t.Run(tt.ip, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			a := serveAdmin(AdminConfig{Token: "do-not-log-me"}, reportedAddr{ln, &net.TCPAddr{IP: net.ParseIP(tt.ip), Port: 9090}}, zap.New(core))
			defer a.Shutdown(context.Background())
			warned := logs.FilterMessageSnippet("not on loopback").All()
			if got := len(warned) == 1; got != tt.warn {
				t.Fatalf("admin on %s: warnings %v, want warned=%v", tt.ip, logs.All(), tt.warn)
			}
			for _, e := range logs.All() {
				if strings.Contains(fmt.Sprint(e.ContextMap()), "do-not-log-me") {
					t.Fatalf("the token was logged: %v", e.ContextMap())
				}
			}
		})
	}
}
