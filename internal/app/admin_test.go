package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// writeToken writes token to a file with mode perm and returns its path.
func writeToken(t *testing.T, token string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(p, []byte(token), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // umask may have narrowed it
		t.Fatal(err)
	}
	return p
}

func adminRequest(t *testing.T, a *App, method, path, host, token string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.AdminAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminTokenFromFile: with admin_token_file set, revocation and pprof
// need the token, /metrics does not, a Host that is no IP literal nor a
// listed name is refused, and the token never reaches a log line while the
// file's path does.
func TestAdminTokenFromFile(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	const token = "s3cret-admin-token"
	path := writeToken(t, token+"\n", 0o600)
	admin := "127.0.0.1:0"
	core, logs := observer.New(zapcore.DebugLevel)
	a, err := New(Options{Logger: zap.New(core), Config: &config.Config{
		Listen: "127.0.0.1:0", Admin: &admin, Pprof: true,
		AdminTokenFile: path, AdminHosts: []string{"edge-admin.internal"},
		Routes:     []proxy.RouteConfig{{Upstreams: []string{up.URL}}},
		Resumption: config.Resumption{Mode: "sticky"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	sid := "/sessions/" + strings.Repeat("ab", 16)
	for _, tt := range []struct {
		method, path, host, token string
		want                      int
	}{
		{"DELETE", sid, "", "", http.StatusUnauthorized},
		{"DELETE", sid, "", "wrong", http.StatusUnauthorized},
		{"DELETE", sid, "", token, http.StatusNoContent},
		{"GET", "/debug/pprof/cmdline", "", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/cmdline", "", token, http.StatusOK},
		{"GET", "/metrics", "", "", http.StatusOK},
		{"GET", "/healthz", "", "", http.StatusOK},
		{"GET", "/metrics", "evil.example", "", http.StatusMisdirectedRequest},
		{"GET", "/debug/pprof/cmdline", "evil.example", token, http.StatusMisdirectedRequest},
		{"GET", "/metrics", "edge-admin.internal", "", http.StatusOK},
	} {
		if got := adminRequest(t, a, tt.method, tt.path, tt.host, tt.token); got != tt.want {
			t.Errorf("%s %s (Host %q, token %q): %d, want %d", tt.method, tt.path, tt.host, tt.token, got, tt.want)
		}
	}
	sawPath := false
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, token) {
			t.Fatalf("the admin token was logged: %s", line)
		}
		if e.ContextMap()["admin_token_file"] == path {
			sawPath = true
		}
	}
	if !sawPath {
		t.Fatalf("no log line names admin_token_file %s", path)
	}
}

func TestAdminTokenFileRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content string
		perm          os.FileMode
		want          string
	}{
		{"world readable", "s3cret", 0o644, "has mode 0644"},
		{"group readable", "s3cret", 0o640, "has mode 0640"},
		{"empty", "\n", 0o600, "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeToken(t, tt.content, tt.perm)
			admin := "127.0.0.1:0"
			_, err := New(Options{Logger: zap.NewNop(), Config: &config.Config{
				Listen: "127.0.0.1:0", Admin: &admin, AdminTokenFile: path,
				Routes: []proxy.RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}}},
			}})
			if err == nil || !strings.HasPrefix(err.Error(), "admin_token_file: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error naming admin_token_file that says %q", err, tt.want)
			}
			var me *ticketkeys.FileModeError
			if tt.perm&0o077 != 0 && !errors.As(err, &me) {
				t.Fatalf("New = %v, want a *ticketkeys.FileModeError", err)
			}
		})
	}
}

func TestAdminConfigValidated(t *testing.T) {
	t.Parallel()
	admin := "127.0.0.1:0"
	_, err := New(Options{Logger: zap.NewNop(), Config: &config.Config{
		Listen: "127.0.0.1:0", Admin: &admin,
		AdminHosts:    []string{"ok.internal", "evil.example:80", ""},
		AdminTimeouts: proxy.AdminTimeouts{ReadHeader: -time.Second},
		Routes:        []proxy.RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}}},
	}})
	if err == nil {
		t.Fatal("New accepted a bad admin_hosts and a negative admin_timeouts.read_header")
	}
	for _, want := range []string{`admin_hosts[1]: "evil.example:80"`, `admin_hosts[2]: ""`, `admin_timeouts.read_header: must not be negative`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New = %v, want it to say %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "admin_hosts[0]") {
		t.Errorf("New = %v: admin_hosts[0] is fine", err)
	}
}

// TestAdminTimeoutsFromConfig: admin_timeouts.read_header reaches the
// listener: half a request line, then silence, and the node hangs up. The
// read deadline only bounds a broken test; it is below the default
// read-header timeout, so a node that ignored the setting fails.
func TestAdminTimeoutsFromConfig(t *testing.T) {
	t.Parallel()
	a := startNode(t, config.Config{
		AdminTimeouts: proxy.AdminTimeouts{ReadHeader: 100 * time.Millisecond},
		Routes:        []proxy.RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}}},
	})
	c, err := net.Dial("tcp", a.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metr")
	c.SetReadDeadline(time.Now().Add(proxy.DefaultAdminReadHeaderTimeout - time.Second))
	if got, err := io.ReadAll(c); err != nil {
		t.Fatalf("half a request line: %v after %q; want the node to close the connection (EOF)", err, got)
	}
}
