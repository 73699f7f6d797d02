package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/buildinfo"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy"
)

func TestBuildInfoMetric(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.NotFoundHandler())
	defer up.Close()
	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}})
	i := buildinfo.Get()
	name := `edgeproxy_build_info{commit="` + i.Commit + `",goversion="` + runtime.Version() + `",version="` + i.Version + `"}`
	if v := metric(t, a, name); v != 1 {
		t.Fatalf("%s = %v, want 1", name, v)
	}
}

// TestReadyzFailsWhileDraining: from the moment a drain starts, /readyz
// answers 503 (so a load balancer or a Kubernetes Service stops sending new
// connections) while /healthz stays 200 (so the node is not killed before
// its in-flight requests finish).
func TestReadyzFailsWhileDraining(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
	}))
	defer up.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}})
	admin := "http://" + a.AdminAddr().String()
	status := func(path string) int {
		t.Helper()
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz before drain = %d, want 200", got)
	}

	// One request in flight holds the drain open.
	inflight := make(chan error, 1)
	go func() {
		resp, err := clientFor(false, nil).Get("https://" + a.Addr().String() + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		inflight <- err
	}()
	<-arrived
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- a.Shutdown(ctx)
	}()

	// Shutdown marks the node draining before it waits for the request;
	// wait for that, bounded, while the request is still held.
	deadline := time.Now().Add(10 * time.Second)
	for status("/readyz") != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz never answered 503 while draining")
		}
		runtime.Gosched()
	}
	if got := status("/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz while draining = %d, want 200", got)
	}
	select {
	case err := <-drained:
		t.Fatalf("drain finished with a request in flight: %v", err)
	default:
	}
	close(release)
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight request failed during the drain: %v", err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
