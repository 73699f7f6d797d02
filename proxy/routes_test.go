package proxy

import (
	"testing"
)

func testRouter(cfgs ...RouteConfig) *router {
	var routes []*route
	for i, rc := range cfgs {
		routes = append(routes, &route{index: i, cfg: rc, prefix: rc.pathPrefix()})
	}
	return newRouter(routes)
}

func TestRouterMatch(t *testing.T) {
	rt := testRouter(
		RouteConfig{Hosts: []string{"example.com"}},                     // 0
		RouteConfig{Hosts: []string{"example.com"}, PathPrefix: "/api"}, // 1
		RouteConfig{Hosts: []string{"*.example.com"}},                   // 2
		RouteConfig{Hosts: []string{"*.EU.example.com"}},                // 3
		RouteConfig{}, // 4: any host
		RouteConfig{Hosts: []string{"api.example.com"}, PathPrefix: "/v1/"},                          // 5
		RouteConfig{Hosts: []string{"Static.Example.com", "cdn.example.org"}, PathPrefix: "/assets"}, // 6
	)
	tests := []struct {
		name, host, path string
		want             int // route index, -1 for none
	}{
		{"exact host root", "example.com", "/", 0},
		{"exact host longest prefix", "example.com", "/api/users", 1},
		{"prefix equals path", "example.com", "/api", 1},
		{"prefix is per segment", "example.com", "/apix", 0},
		{"host case and port ignored", "EXAMPLE.com:8443", "/api/x", 1},
		{"trailing dot ignored", "example.com.", "/", 0},
		{"wildcard", "a.example.com", "/", 2},
		{"wildcard matches deeper names", "a.b.example.com", "/", 2},
		{"longest wildcard wins", "x.eu.example.com", "/anything", 3},
		{"wildcard needs a label", "eu.example.com", "/", 2},
		{"exact beats wildcard", "api.example.com", "/v1/users", 5},
		{"no fallback from a named host", "api.example.com", "/v2", -1},
		{"slash-terminated prefix needs the slash", "api.example.com", "/v1", -1},
		{"config host case ignored", "static.example.com", "/assets/app.js", 6},
		{"second host of a route", "cdn.example.org", "/assets", 6},
		{"named host without matching prefix", "cdn.example.org", "/", -1},
		{"unknown host goes to any-host route", "other.org", "/x", 4},
		{"empty host goes to any-host route", "", "/", 4},
		{"IPv6 literal with port", "[::1]:443", "/", 4},
		{"empty path is root", "example.com", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := -1
			if r := rt.match(tt.host, tt.path); r != nil {
				got = r.index
			}
			if got != tt.want {
				t.Errorf("match(%q, %q) = route %d, want %d", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestRouterNoAnyHost(t *testing.T) {
	rt := testRouter(RouteConfig{Hosts: []string{"example.com"}, PathPrefix: "/app"})
	for _, tt := range []struct{ name, host, path string }{
		{"unknown host", "other.org", "/app"},
		{"known host other path", "example.com", "/"},
		{"wildcard-looking host", "x.example.com", "/app"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := rt.match(tt.host, tt.path); r != nil {
				t.Errorf("match(%q, %q) = route %d, want none", tt.host, tt.path, r.index)
			}
		})
	}
}

func TestRouterMatchDoesNotAllocate(t *testing.T) {
	rt := testRouter(
		RouteConfig{Hosts: []string{"example.com"}, PathPrefix: "/api"},
		RouteConfig{Hosts: []string{"*.example.com"}},
		RouteConfig{},
	)
	for _, tt := range []struct{ host, path string }{
		{"example.com:443", "/api/users"},
		{"a.example.com", "/"},
		{"other.org", "/x"},
	} {
		t.Run(tt.host, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { rt.match(tt.host, tt.path) }); n != 0 {
				t.Errorf("match(%q, %q) allocates %v times", tt.host, tt.path, n)
			}
		})
	}
}
