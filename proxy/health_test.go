package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// healthOf returns the health of upstream url in h.
func healthOf(t *testing.T, h *Handler, url string) UpstreamHealth {
	t.Helper()
	for _, uh := range h.Health() {
		if uh.Upstream == url {
			return uh
		}
	}
	t.Fatalf("no upstream %s in Health()", url)
	return UpstreamHealth{}
}

func TestActiveHealthCheckThresholds(t *testing.T) {
	a, b := startUpstream(t, "a", nil), startUpstream(t, "b", nil)
	reg := prometheus.NewRegistry()
	h := newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{
			Upstreams:   []string{a.URL, b.URL},
			HealthCheck: HealthCheckConfig{Path: "/healthz", UnhealthyAfter: 2, HealthyAfter: 2},
		}},
		Registerer: reg,
	})
	ts := serveProxy(t, h)
	ctx := context.Background()
	gauge := func() float64 {
		return metricValue(t, reg, "edgeproxy_upstream_healthy", map[string]string{"upstream": a.URL})
	}

	a.health.Store(http.StatusInternalServerError)
	h.CheckNow(ctx)
	if !healthOf(t, h, a.URL).Healthy {
		t.Fatal("a is down after 1 failed check, want up until unhealthy_after=2")
	}
	h.CheckNow(ctx)
	if healthOf(t, h, a.URL).Healthy || gauge() != 0 {
		t.Fatalf("after 2 failed checks: healthy=%v gauge=%v, want down and 0", healthOf(t, h, a.URL).Healthy, gauge())
	}
	for range 4 {
		if got := doRequest(t, ts, "GET", "/", ""); got.backend != "b" {
			t.Errorf("request went to %q while a is down, want b", got.backend)
		}
	}
	if n := a.hits.Load(); n != 0 {
		t.Errorf("down upstream served %d requests", n)
	}

	a.health.Store(http.StatusOK)
	h.CheckNow(ctx)
	if healthOf(t, h, a.URL).Healthy {
		t.Fatal("a is up after 1 passing check, want down until healthy_after=2")
	}
	h.CheckNow(ctx)
	if !healthOf(t, h, a.URL).Healthy || gauge() != 1 {
		t.Fatalf("after 2 passing checks: healthy=%v gauge=%v, want up and 1", healthOf(t, h, a.URL).Healthy, gauge())
	}
	for range 4 {
		doRequest(t, ts, "GET", "/", "")
	}
	if n := a.hits.Load(); n != 2 {
		t.Errorf("recovered upstream served %d of 4 requests, want 2", n)
	}
}

func TestHandler503OnlyWhenAllDown(t *testing.T) {
	a, b := startUpstream(t, "a", nil), startUpstream(t, "b", nil)
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{
		Upstreams:   []string{a.URL, b.URL},
		HealthCheck: HealthCheckConfig{Path: "/healthz", UnhealthyAfter: 1, HealthyAfter: 1},
	}}})
	ts := serveProxy(t, h)
	steps := []struct {
		name       string
		aSick      bool
		bSick      bool
		wantStatus int
	}{
		{"all up", false, false, 200},
		{"one down", true, false, 200},
		{"all down", true, true, 503},
		{"one back", false, true, 200},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			for u, sick := range map[*testUpstream]bool{a: st.aSick, b: st.bSick} {
				u.health.Store(map[bool]int64{true: 500, false: 200}[sick])
			}
			h.CheckNow(context.Background())
			got := doRequest(t, ts, "GET", "/", "")
			if got.status != st.wantStatus {
				t.Errorf("status %d, want %d", got.status, st.wantStatus)
			}
			if st.wantStatus == 503 && !strings.Contains(got.body, "no healthy upstream") {
				t.Errorf("503 body = %q, want it to say no healthy upstream", got.body)
			}
		})
	}
}

func TestHealthCheckResult(t *testing.T) {
	var gotPath atomic.Value
	var release chan struct{} // per subtest
	respond := func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		switch r.URL.Path {
		case "/status/204":
			w.WriteHeader(204)
		case "/status/redirect":
			http.Redirect(w, r, "/status/200", http.StatusFound)
		case "/status/slow":
			<-release
		default:
			w.WriteHeader(200)
		}
	}
	tests := []struct {
		name     string
		hc       HealthCheckConfig
		upstream string
		fault    error // returned by the transport instead of the upstream's answer
		want     bool
	}{
		{name: "expected status", hc: HealthCheckConfig{Path: "/status/204", ExpectStatus: 204}, want: true},
		{name: "other status", hc: HealthCheckConfig{Path: "/status/200", ExpectStatus: 204}, want: false},
		{name: "redirect not followed", hc: HealthCheckConfig{Path: "/status/redirect"}, want: false},
		{name: "timeout", hc: HealthCheckConfig{Path: "/status/slow", Timeout: 20 * time.Millisecond}, want: false},
		{name: "connection refused", hc: HealthCheckConfig{Path: "/status/200"}, fault: dialRefused("x"), want: false},
		{name: "upstream path not prepended", hc: HealthCheckConfig{Path: "/status/200"}, upstream: "/base", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.hc.UnhealthyAfter = 1
			base := http.DefaultTransport
			srv := startUpstream(t, "u", respond)
			release = make(chan struct{})
			t.Cleanup(func() { close(release) }) // before srv.Close
			h := newTestHandler(t, HandlerConfig{
				Routes: []RouteConfig{{Upstreams: []string{srv.URL + tt.upstream}, HealthCheck: tt.hc}},
				Transport: transportFunc(func(r *http.Request) (*http.Response, error) {
					if tt.fault != nil {
						return nil, tt.fault
					}
					return base.RoundTrip(r)
				}),
			})
			h.CheckNow(context.Background())
			if got := h.Health()[0].Healthy; got != tt.want {
				t.Errorf("healthy after check = %v, want %v", got, tt.want)
			}
			if tt.fault == nil && gotPath.Load() != tt.hc.Path {
				t.Errorf("checked path %v, want %q", gotPath.Load(), tt.hc.Path)
			}
		})
	}
}

func TestPassiveEjectionAndCooldown(t *testing.T) {
	dead := deadUpstreamURL(t)
	b := startUpstream(t, "b", nil)
	clock := &ejectClock{now: time.Unix(1_700_000_000, 0)}
	var deadTries atomic.Int64
	base := newUpstreamTransport(&RouteConfig{}, nil) // marks dial errors, as in production
	t.Cleanup(base.CloseIdleConnections)
	h := newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{
			Upstreams:    []string{dead, b.URL},
			PassiveEject: PassiveEjectConfig{Failures: 2, Cooldown: time.Minute},
		}},
		Transport: transportFunc(func(r *http.Request) (*http.Response, error) {
			if "http://"+r.URL.Host == dead {
				deadTries.Add(1)
			}
			return base.RoundTrip(r)
		}),
		Now: clock.Now,
	})
	ts := serveProxy(t, h)
	get := func() {
		t.Helper()
		if got := doRequest(t, ts, "GET", "/", ""); got.status != 200 || got.backend != "b" {
			t.Fatalf("got %d from %q, want 200 from b", got.status, got.backend)
		}
	}

	for range 3 { // round robin: dead, b, dead; each dead try is retried on b
		get()
	}
	if n := deadTries.Load(); n != 2 {
		t.Fatalf("dead upstream tried %d times, want 2", n)
	}
	if healthOf(t, h, dead).Healthy {
		t.Fatal("dead upstream still healthy after 2 consecutive dial failures")
	}
	for range 4 {
		get()
	}
	if n := deadTries.Load(); n != 2 {
		t.Errorf("ejected upstream tried %d more times during the cooldown", n-2)
	}

	clock.Advance(59 * time.Second)
	if healthOf(t, h, dead).Healthy {
		t.Error("ejected upstream back before the cooldown ended")
	}
	clock.Advance(2 * time.Second)
	if !healthOf(t, h, dead).Healthy {
		t.Error("ejected upstream not back after the cooldown")
	}
	get()
	get()
	if n := deadTries.Load(); n != 3 {
		t.Errorf("dead upstream tried %d times after the cooldown, want 3", n)
	}
}

func TestPassiveEjectionEndsOnPassingCheck(t *testing.T) {
	a, b := startUpstream(t, "a", nil), startUpstream(t, "b", nil)
	var broken atomic.Bool
	broken.Store(true)
	base := newUpstreamTransport(&RouteConfig{}, nil) // marks dial errors, as in production
	t.Cleanup(base.CloseIdleConnections)
	h := newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{
			Upstreams:    []string{a.URL, b.URL},
			PassiveEject: PassiveEjectConfig{Failures: 1, Cooldown: time.Hour},
			HealthCheck:  HealthCheckConfig{Path: "/healthz", HealthyAfter: 3},
		}},
		Transport: transportFunc(func(r *http.Request) (*http.Response, error) {
			if broken.Load() && "http://"+r.URL.Host == a.URL {
				return nil, dialRefused(r.URL.Host)
			}
			return base.RoundTrip(r)
		}),
	})
	ts := serveProxy(t, h)
	if got := doRequest(t, ts, "GET", "/", ""); got.status != 200 || got.backend != "b" {
		t.Fatalf("got %d from %q, want 200 from b after retry", got.status, got.backend)
	}
	if healthOf(t, h, a.URL).Healthy {
		t.Fatal("a not ejected after a dial failure with failures=1")
	}
	broken.Store(false)
	h.CheckNow(context.Background())
	if !healthOf(t, h, a.URL).Healthy {
		t.Error("a still ejected after a passing active check")
	}
}

func TestHealthCheckStartStop(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	entered := make(chan struct{})
	var returned atomic.Bool
	h := newTestHandler(t, HandlerConfig{
		Routes: []RouteConfig{{
			Upstreams:   []string{"http://panics.test", "http://blocks.test"},
			HealthCheck: HealthCheckConfig{Path: "/healthz", Interval: time.Hour},
		}},
		Logger: zap.New(core),
		Transport: transportFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Host == "panics.test" {
				panic("injected health check panic")
			}
			close(entered)
			<-r.Context().Done() // canceled by Stop
			returned.Store(true)
			return nil, r.Context().Err()
		}),
	})
	h.checkers[0].firstAfter = 0
	h.Start()
	h.Start() // no-op while running
	<-entered
	h.Stop()
	if !returned.Load() {
		t.Error("Stop returned before the running check ended")
	}
	if n := logs.FilterMessage("health check panic").Len(); n != 1 {
		t.Errorf("logged %d health check panics, want 1", n)
	}
	for _, uh := range h.Health() {
		if !uh.Healthy {
			t.Errorf("%s marked down by a check canceled by Stop", uh.Upstream)
		}
	}
	h.Stop() // a second Stop is harmless
}
