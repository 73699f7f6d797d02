package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

// TestStoreErrorNamesFieldOnce: a Redis password file that others can read
// fails the node with one error that names the field by its path in the
// configuration file, once, and carries no Go package paths (it used to
// read "resumption.redis: sessioncache/redis: redis.password_file: ...").
func TestStoreErrorNamesFieldOnce(t *testing.T) {
	t.Parallel()
	pw := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pw, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	why := fmt.Sprintf("%q has mode 0644: group and others must have no access (chmod 600 %s; in Kubernetes a root-owned Secret with defaultMode 0440 and the pod's fsGroup also works)", pw, pw)
	tests := []struct {
		name string
		res  config.Resumption
		want string
	}{
		{"session store", config.Resumption{
			Mode:  "redis",
			Redis: redisstore.Config{Addrs: []string{"127.0.0.1:1"}, PasswordFile: pw},
		}, "resumption.redis.password_file: " + why},
		{"ticket key store", config.Resumption{
			Mode: "tickets",
			TicketKeys: config.TicketKeys{Source: "redis", Redis: config.RedisKeys{
				Addrs: []string{"127.0.0.1:1"}, PasswordFile: pw, KEKFile: filepath.Join(t.TempDir(), "kek"),
			}},
		}, "resumption.ticket_keys.redis.password_file: " + why},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			admin := ""
			cfg := config.Config{
				Listen:     "127.0.0.1:0",
				Admin:      &admin,
				Routes:     []proxy.RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}}},
				Resumption: tt.res,
			}
			a, err := New(Options{Config: &cfg, Logger: zap.NewNop()})
			if err == nil {
				a.sessions.Close()
				t.Fatal("New accepted a password file others can read")
			}
			if err.Error() != tt.want {
				t.Fatalf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestRevokeStoreDown: DELETE /sessions/{id} while Redis does not answer
// is a 503 that tells the operator to retry, not a success (#12); once
// Redis is back, the retry is a 204.
func TestRevokeStoreDown(t *testing.T) {
	// Not parallel: it pauses a server.
	up := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(up.Close)
	rs := testserver.Redis(t)
	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: config.Resumption{
		Mode: "redis", Redis: redisstore.Config{Addrs: []string{rs.Addr}},
	}})
	revoke := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, "http://"+a.AdminAddr().String()+"/sessions/"+strings.Repeat("ab", 16), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	rs.Pause()
	code, body := revoke()
	rs.Resume()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "retry") {
		t.Fatalf("store paused: %d %q; want 503 saying retry", code, body)
	}
	if code, body := revoke(); code != http.StatusNoContent {
		t.Fatalf("store back: %d %q; want 204", code, body)
	}
}
