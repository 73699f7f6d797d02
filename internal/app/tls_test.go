package app

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// TestNoEarlyData is a regression guard against 0-RTT, whose early data
// can be replayed. crypto/tls offers no 0-RTT over TCP (it sends tickets
// without the early_data extension, and aborts a handshake that offers
// early data anyway); this checks what a client of a default node sees:
// its TLS 1.3 tickets resume but grant no early data (max_early_data 0),
// so OpenSSL's s_client, asked to send early data on resumption, does not.
func TestNoEarlyData(t *testing.T) {
	t.Parallel()
	openssl := needOpenSSL(t)
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}})
	dir := t.TempDir()
	sess, early := filepath.Join(dir, "sess.pem"), filepath.Join(dir, "early.txt")
	req := "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
	if err := os.WriteFile(early, []byte(req), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, append([]string{"s_client", "-connect", a.Addr().String(),
			"-servername", "localhost", "-tls1_3", "-ign_eof"}, args...)...)
		cmd.Stdin = strings.NewReader(req)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("-sess_out", sess); !strings.Contains(out, "New, TLSv1.3") {
		t.Fatalf("first connection was not a new TLS 1.3 session:\n%s", out)
	}
	out := run("-sess_in", sess, "-early_data", early)
	if !strings.Contains(out, "Reused, TLSv1.3") {
		t.Fatalf("second connection did not resume, so early data was never in question:\n%s", out)
	}
	if !strings.Contains(out, "Early data was not sent") || strings.Contains(out, "Early data was accepted") {
		t.Fatalf("openssl offered or sent early data on resumption:\n%s", out)
	}
	// The tickets the resumed connection received grant no early data.
	grants := maxEarlyData.FindAllStringSubmatch(out, -1)
	if len(grants) == 0 {
		t.Fatalf("openssl printed no session with its Max Early Data:\n%s", out)
	}
	for _, g := range grants {
		if g[1] != "0" {
			t.Fatalf("a ticket grants %s bytes of early data:\n%s", g[1], out)
		}
	}
	if !strings.Contains(out, "HTTP/1.0 200 OK") {
		t.Fatalf("no response after the resumed handshake:\n%s", out)
	}
}

var maxEarlyData = regexp.MustCompile(`Max Early Data: (\d+)`)

// needOpenSSL returns the openssl binary's path. It fails the test without
// one, unless EDGEPROXY_SKIP_SERVERS=1.
func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("EDGEPROXY_SKIP_SERVERS") == "1" {
			t.Skip("openssl not installed and EDGEPROXY_SKIP_SERVERS=1")
		}
		t.Fatal("openssl is not installed: apt-get install openssl (or set EDGEPROXY_SKIP_SERVERS=1)")
	}
	return p
}
