package proxy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// fieldErrors flattens the errors.Join tree of ValidateRoutes.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("ValidateRoutes error %T is not joined", err)
	}
	var out []*FieldError
	for _, e := range multi.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("ValidateRoutes returned %T, want *FieldError: %v", e, e)
		}
		out = append(out, fe)
	}
	return out
}

func TestValidateRoutesRejects(t *testing.T) {
	ok := func(mod func(*RouteConfig)) RouteConfig {
		rc := RouteConfig{Hosts: []string{"example.com"}, Upstreams: []string{"http://10.0.0.1:8080"}}
		mod(&rc)
		return rc
	}
	tests := []struct {
		name   string
		routes []RouteConfig
		want   string // the one expected error, exactly
	}{
		{
			name:   "h2c upgrade",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upgrades = []string{"websocket", "H2C"} })},
			want:   `routes[0].upgrades[1]: "H2C": never allowed: a cleartext HTTP/2 tunnel would carry requests the proxy never parsed`,
		},
		{
			name:   "upgrade not a token",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upgrades = []string{"web socket"} })},
			want:   `routes[0].upgrades[0]: "web socket": not a protocol name (an HTTP token such as "websocket")`,
		},
		{
			name:   "body limit below -1",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Limits.MaxBodyBytes = -2 })},
			want:   `routes[0].limits.max_body_bytes: must be positive, or -1 for no limit, got -2`,
		},
		{
			name:   "negative body rate",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Limits.BodyMinRate = -1 })},
			want:   `routes[0].limits.body_min_rate: must be positive (bytes per second), got -1`,
		},
		{
			name:   "negative upstream conns",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Limits.MaxConnsPerUpstream = -1 })},
			want:   `routes[0].limits.max_conns_per_upstream: must be at least 1, got -1`,
		},
		{
			name:   "upstream scheme",
			routes: []RouteConfig{ok(func(*RouteConfig) {}), ok(func(rc *RouteConfig) { rc.Hosts = []string{"b.example"}; rc.Upstreams = []string{"htp://x"} })},
			want:   `routes[1].upstreams[0]: "htp://x": scheme must be http or https`,
		},
		{
			name:   "upstream without scheme",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upstreams = []string{"10.0.0.1:8080"} })},
			want:   `routes[0].upstreams[0]: "10.0.0.1:8080": not a URL: first path segment in URL cannot contain colon`,
		},
		{
			name:   "upstream without host",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upstreams = []string{"http://"} })},
			want:   `routes[0].upstreams[0]: "http://": missing host, as in "http://10.0.0.5:8080"`,
		},
		{
			name:   "upstream with query",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upstreams = []string{"http://a/?x=1"} })},
			want:   `routes[0].upstreams[0]: "http://a/?x=1": must not have a query or fragment`,
		},
		{
			name:   "duplicate upstream",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upstreams = []string{"http://a", "http://b", "http://a"} })},
			want:   `routes[0].upstreams[2]: "http://a": duplicate of upstreams[0]`,
		},
		{
			name:   "no upstreams",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Upstreams = nil })},
			want:   `routes[0].upstreams: must list at least one upstream URL, such as "http://127.0.0.1:8080"`,
		},
		{
			name:   "unknown balance",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Balance = "random" })},
			want:   `routes[0].balance: "random": must be round_robin or least_conn`,
		},
		{
			name:   "bare wildcard",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Hosts = []string{"*."} })},
			want:   `routes[0].hosts[0]: "*.": wildcard needs a domain after "*.", as in "*.example.com"`,
		},
		{
			name:   "wildcard inside",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Hosts = []string{"a.example", "a.*.example"} })},
			want:   `routes[0].hosts[1]: "a.*.example": "*" is only allowed as the whole first label, as in "*.example.com"`,
		},
		{
			name:   "host with port",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Hosts = []string{"example.com:443"} })},
			want:   `routes[0].hosts[0]: "example.com:443": must not include a port (matching ignores the port)`,
		},
		{
			name:   "host with empty label",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Hosts = []string{"example..com"} })},
			want:   `routes[0].hosts[0]: "example..com": must not have an empty label (leading, trailing or double dot)`,
		},
		{
			name:   "duplicate host ignoring case",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Hosts = []string{"example.com", "EXAMPLE.com"} })},
			want:   `routes[0].hosts[1]: "EXAMPLE.com": duplicate of hosts[0]`,
		},
		{
			name:   "path prefix without slash",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.PathPrefix = "api" })},
			want:   `routes[0].path_prefix: "api": must start with "/"`,
		},
		{
			name:   "negative health check interval",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.HealthCheck = HealthCheckConfig{Path: "/healthz", Interval: -time.Second} })},
			want:   `routes[0].health_check.interval: must be positive, got "-1s"`,
		},
		{
			name: "health check timeout not below interval",
			routes: []RouteConfig{ok(func(rc *RouteConfig) {
				rc.HealthCheck = HealthCheckConfig{Path: "/healthz", Interval: 5 * time.Second, Timeout: 5 * time.Second}
			})},
			want: `routes[0].health_check.timeout: "5s": must be shorter than the interval "5s"`,
		},
		{
			name:   "health check path without slash",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.HealthCheck = HealthCheckConfig{Path: "healthz"} })},
			want:   `routes[0].health_check.path: "healthz": must start with "/"`,
		},
		{
			name:   "health check fields without path",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.HealthCheck = HealthCheckConfig{Interval: time.Second} })},
			want:   `routes[0].health_check.path: required when other health_check fields are set (health checks are off without it)`,
		},
		{
			name:   "expect status out of range",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.HealthCheck = HealthCheckConfig{Path: "/h", ExpectStatus: 700} })},
			want:   `routes[0].health_check.expect_status: must be an HTTP status code from 100 to 599, got 700`,
		},
		{
			name:   "negative unhealthy_after",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.HealthCheck = HealthCheckConfig{Path: "/h", UnhealthyAfter: -2} })},
			want:   `routes[0].health_check.unhealthy_after: must be at least 1, got -2`,
		},
		{
			name:   "negative eject failures",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.PassiveEject.Failures = -1 })},
			want:   `routes[0].passive_eject.failures: must be at least 1, got -1`,
		},
		{
			name:   "negative dial timeout",
			routes: []RouteConfig{ok(func(rc *RouteConfig) { rc.Timeouts.DialTimeout = -time.Millisecond })},
			want:   `routes[0].timeouts.dial_timeout: must be positive, got "-1ms"`,
		},
		{
			name: "duplicate route",
			routes: []RouteConfig{
				ok(func(rc *RouteConfig) { rc.Hosts = []string{"a.example", "b.example"}; rc.PathPrefix = "/api" }),
				ok(func(rc *RouteConfig) { rc.Hosts = []string{"c.example"} }),
				ok(func(rc *RouteConfig) { rc.Hosts = []string{"B.example", "a.example"}; rc.PathPrefix = "/api" }),
			},
			want: `routes[2]: duplicate of routes[0] (same hosts and path_prefix "/api")`,
		},
		{
			name: "host and prefix already routed",
			routes: []RouteConfig{
				ok(func(rc *RouteConfig) { rc.Hosts = []string{"a.example"} }),
				ok(func(rc *RouteConfig) { rc.Hosts = []string{"b.example", "a.example"}; rc.PathPrefix = "/" }),
			},
			want: `routes[1].hosts[1]: "a.example" with path_prefix "/" is already routed by routes[0]`,
		},
		{
			name: "two any-host routes with the default prefix",
			routes: []RouteConfig{
				ok(func(rc *RouteConfig) { rc.Hosts = nil }),
				ok(func(rc *RouteConfig) { rc.Hosts = []string{}; rc.PathPrefix = "/" }),
			},
			want: `routes[1]: duplicate of routes[0] (same hosts and path_prefix "/")`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := fieldErrors(t, ValidateRoutes(tt.routes))
			if len(errs) != 1 || errs[0].Error() != tt.want {
				t.Errorf("got %d errors %q\nwant exactly %q", len(errs), errs, tt.want)
			}
		})
	}
}

func TestValidateRoutesReportsEveryProblem(t *testing.T) {
	err := ValidateRoutes([]RouteConfig{
		{Hosts: []string{"*."}, Balance: "random"},
		{PathPrefix: "x", Upstreams: []string{"ftp://a"}, HealthCheck: HealthCheckConfig{Path: "/h", Timeout: -time.Second}},
	})
	var paths []string
	for _, fe := range fieldErrors(t, err) {
		paths = append(paths, fe.Path)
	}
	want := []string{
		"routes[0].hosts[0]", "routes[0].upstreams", "routes[0].balance",
		"routes[1].path_prefix", "routes[1].upstreams[0]", "routes[1].health_check.timeout",
	}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Errorf("error paths %q\nwant        %q", paths, want)
	}
}

func TestValidateRoutesAccepts(t *testing.T) {
	tests := []struct {
		name   string
		routes []RouteConfig
	}{
		{"none", nil},
		{"minimal", []RouteConfig{{Upstreams: []string{"http://a"}}}},
		{"full", []RouteConfig{{
			Hosts:      []string{"example.com", "*.example.com", "*.com", "127.0.0.1", "under_score.example"},
			PathPrefix: "/api/",
			Upstreams:  []string{"https://a:8443/base", "http://[::1]:8080"},
			Balance:    BalanceLeastConn,
			HealthCheck: HealthCheckConfig{Path: "/healthz?full=1", Interval: 5 * time.Second, Timeout: time.Second,
				ExpectStatus: 204, UnhealthyAfter: 1, HealthyAfter: 1},
			PassiveEject: PassiveEjectConfig{Failures: 5, Cooldown: time.Minute},
			Timeouts:     UpstreamTimeouts{DialTimeout: time.Second, ResponseHeaderTimeout: time.Minute, IdleConnTimeout: time.Minute},
		}}},
		{"same host different prefixes", []RouteConfig{
			{Hosts: []string{"a.example"}, Upstreams: []string{"http://a"}},
			{Hosts: []string{"a.example"}, PathPrefix: "/api", Upstreams: []string{"http://a"}},
			{Hosts: []string{"a.example"}, PathPrefix: "/api/", Upstreams: []string{"http://a"}},
		}},
		{"any host beside named hosts", []RouteConfig{
			{Upstreams: []string{"http://a"}},
			{Hosts: []string{"a.example"}, Upstreams: []string{"http://a"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateRoutes(tt.routes); err != nil {
				t.Errorf("ValidateRoutes: %v", err)
			}
		})
	}
}

func TestRouteConfigYAML(t *testing.T) {
	const doc = `
hosts: ["api.example.com"]
path_prefix: /v1
upstreams: ["http://10.0.0.1:8080"]
balance: least_conn
health_check: {path: /healthz, interval: 5s, timeout: 1s, expect_status: 204, unhealthy_after: 2, healthy_after: 1}
passive_eject: {failures: 4, cooldown: 1m}
timeouts: {dial_timeout: 2s, response_header_timeout: 10s, idle_conn_timeout: 1m30s}
`
	var rc RouteConfig
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&rc); err != nil {
		t.Fatal(err)
	}
	want := RouteConfig{
		Hosts: []string{"api.example.com"}, PathPrefix: "/v1", Upstreams: []string{"http://10.0.0.1:8080"},
		Balance:      BalanceLeastConn,
		HealthCheck:  HealthCheckConfig{Path: "/healthz", Interval: 5 * time.Second, Timeout: time.Second, ExpectStatus: 204, UnhealthyAfter: 2, HealthyAfter: 1},
		PassiveEject: PassiveEjectConfig{Failures: 4, Cooldown: time.Minute},
		Timeouts:     UpstreamTimeouts{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second},
	}
	if fmt.Sprint(rc) != fmt.Sprint(want) {
		t.Errorf("decoded %+v\nwant    %+v", rc, want)
	}

	dec = yaml.NewDecoder(strings.NewReader("upstreams: [http://a]\nbalanse: round_robin\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&rc); err == nil || !strings.Contains(err.Error(), "balanse") {
		t.Errorf("misspelt key: got %v, want an error naming it", err)
	}
}

func TestRouteConfigDefaults(t *testing.T) {
	var rc RouteConfig
	got := []any{rc.pathPrefix(), rc.balance(), rc.HealthCheck.enabled(), rc.HealthCheck.interval(), rc.HealthCheck.timeout(),
		rc.HealthCheck.expectStatus(), rc.HealthCheck.unhealthyAfter(), rc.HealthCheck.healthyAfter(),
		rc.PassiveEject.failures(), rc.PassiveEject.cooldown(),
		rc.Timeouts.dial(), rc.Timeouts.responseHeader(), rc.Timeouts.idleConn()}
	want := []any{"/", "round_robin", false, 10 * time.Second, 2 * time.Second, 200, 3, 2, 3, 30 * time.Second,
		5 * time.Second, 30 * time.Second, 90 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("defaults %v, want %v", got, want)
	}
	rc.HealthCheck.Interval = time.Second
	if d := rc.HealthCheck.timeout(); d != time.Second {
		t.Errorf("default timeout with a 1s interval = %v, want it capped at 1s", d)
	}
}

func ExampleValidateRoutes() {
	err := ValidateRoutes([]RouteConfig{
		{Hosts: []string{"*.example.com"}, Upstreams: []string{"http://10.0.0.1:8080"}},
		{Hosts: []string{"*."}, Upstreams: []string{"htp://x"}, Balance: "random"},
	})
	fmt.Println(err)
	// Output:
	// routes[1].hosts[0]: "*.": wildcard needs a domain after "*.", as in "*.example.com"
	// routes[1].upstreams[0]: "htp://x": scheme must be http or https
	// routes[1].balance: "random": must be round_robin or least_conn
}
