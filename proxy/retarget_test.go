package proxy

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRetryKeepsTheOutboundURL: a request retried on another upstream after
// a failed dial reaches it with the path and query a first attempt there
// would have had: the upstream's base path joined, and the query cleaned
// of what url.ParseQuery rejects (retarget rebuilds it from the inbound
// URL rather than keeping a copy in every exchange).
func TestRetryKeepsTheOutboundURL(t *testing.T) {
	t.Parallel()
	uris := make(chan string, 2)
	second := startUpstream(t, "second", func(w http.ResponseWriter, r *http.Request) {
		uris <- r.URL.RequestURI()
	})
	const path = "/a%2Fb/c?q=1&bad=%zz&semi=1;2&r=%C3%A9"
	direct := serveProxy(t, newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{second.URL + "/base"}}}}))
	if got := doRequest(t, direct, "GET", path, ""); got.status != 200 {
		t.Fatalf("direct: status %d", got.status)
	}
	want := <-uris
	// Two names for the second upstream; whichever is tried first fails
	// to connect.
	other := strings.Replace(second.URL, "127.0.0.1", "localhost", 1) + "/base"
	base := newUpstreamTransport(&RouteConfig{}, nil)
	t.Cleanup(base.CloseIdleConnections)
	var attempts atomic.Int64
	retried := serveProxy(t, newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{Upstreams: []string{second.URL + "/base", other}}},
		Transport: transportFunc(func(r *http.Request) (*http.Response, error) {
			if attempts.Add(1) == 1 {
				return nil, dialRefused(r.URL.Host)
			}
			return base.RoundTrip(r)
		}),
	}))
	if got := doRequest(t, retried, "GET", path, ""); got.status != 200 || attempts.Load() != 2 {
		t.Fatalf("retried: status %d after %d attempts, want 200 after 2", got.status, attempts.Load())
	}
	if got := <-uris; got != want {
		t.Errorf("retried request reached the upstream as %q, want %q as without the retry", got, want)
	}
	t.Logf("upstream saw %q", want)
}
