package app

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// TestForgedSessionIDHeaderNeverReachesUpstream sends the session-ID header
// under every spelling a CGI-style upstream would read as the same name, with
// the feature on (default and custom name) and off, and checks the upstream
// sees only the proxy's own value.
func TestForgedSessionIDHeaderNeverReachesUpstream(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
	}))
	t.Cleanup(up.Close)
	custom, off := "X-Sess", ""
	for _, mode := range []string{"tickets", "sticky"} {
		for _, header := range []*string{nil, &custom, &off} {
			name := "default"
			if header != nil {
				name = fmt.Sprintf("%q", *header)
			}
			t.Run(mode+" header "+name, func(t *testing.T) {
				a := startNode(t, config.Config{
					Routes:     []proxy.RouteConfig{{Upstreams: []string{up.URL}}},
					Resumption: config.Resumption{Mode: mode, SessionIDHeader: header},
				})
				mu.Lock()
				seen = nil
				mu.Unlock()
				c, err := tls.Dial("tcp", a.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
					ClientSessionCache: tls.NewLRUClientSessionCache(1)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				var req strings.Builder
				req.WriteString("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
				for _, n := range []string{"X-TLS-Session-ID", "x-tls-session-id", "X_TLS_Session_ID", "x_tls_session_id"} {
					req.WriteString(n + ": forged\r\n")
				}
				if header == &custom {
					req.WriteString("X-Sess: forged\r\nx_SESS: forged\r\n")
				}
				req.WriteString("\r\n")
				fmt.Fprint(c, req.String())
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				mu.Lock()
				defer mu.Unlock()
				if len(seen) != 1 {
					t.Fatalf("upstream got %d requests, want 1", len(seen))
				}
				for n, v := range seen[0] {
					if strings.Contains(strings.Join(v, ","), "forged") {
						t.Errorf("forged %s: %q reached the upstream", n, v)
					}
				}
				want := config.DefaultSessionIDHeader
				if header != nil {
					want = *header
				}
				if got := seen[0].Get(want); mode == "sticky" && want != "" && len(got) != 32 {
					t.Errorf("%s = %q, want the proxy's 32-hex-digit id", want, got)
				}
			})
		}
	}
}
