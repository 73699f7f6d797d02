package proxy

import (
	"cmp"
	"slices"
	"strings"
)

// router maps a request's host and path to a route. It is built once by
// newRouter and never modified, so it is safe for concurrent use.
//
// Matching picks the host first: an exact name, else the longest matching
// "*.suffix", else the routes without hosts. Within that host it picks the
// longest matching path prefix. There is no fallback to a less specific host
// when no prefix matches: like a virtual host, a named host owns its paths.
type router struct {
	exact     map[string]*hostRoutes
	wildcards []wildcardRoutes // longest suffix first
	anyHost   *hostRoutes      // routes without hosts; nil if none
}

// hostRoutes holds one host's routes, longest path prefix first.
type hostRoutes struct {
	routes []*route
}

type wildcardRoutes struct {
	suffix string // ".example.com" for "*.example.com"
	hr     *hostRoutes
}

// newRouter compiles routes into a router. Host names are lowercased; the
// routes must have passed ValidateRoutes.
func newRouter(routes []*route) *router {
	rt := &router{exact: map[string]*hostRoutes{}}
	wild := map[string]*hostRoutes{}
	add := func(m map[string]*hostRoutes, key string, r *route) {
		hr := m[key]
		if hr == nil {
			hr = &hostRoutes{}
			m[key] = hr
		}
		hr.routes = append(hr.routes, r)
	}
	for _, r := range routes {
		if len(r.cfg.Hosts) == 0 {
			if rt.anyHost == nil {
				rt.anyHost = &hostRoutes{}
			}
			rt.anyHost.routes = append(rt.anyHost.routes, r)
		}
		for _, h := range r.cfg.Hosts {
			h = strings.ToLower(h)
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				add(wild, suffix, r)
			} else {
				add(rt.exact, h, r)
			}
		}
	}
	for suffix, hr := range wild {
		rt.wildcards = append(rt.wildcards, wildcardRoutes{suffix: suffix, hr: hr})
	}
	slices.SortFunc(rt.wildcards, func(a, b wildcardRoutes) int {
		return cmp.Or(cmp.Compare(len(b.suffix), len(a.suffix)), strings.Compare(a.suffix, b.suffix))
	})
	sortRoutes := func(hr *hostRoutes) {
		slices.SortStableFunc(hr.routes, func(a, b *route) int {
			return cmp.Compare(len(b.prefix), len(a.prefix))
		})
	}
	for _, hr := range rt.exact {
		sortRoutes(hr)
	}
	for _, w := range rt.wildcards {
		sortRoutes(w.hr)
	}
	if rt.anyHost != nil {
		sortRoutes(rt.anyHost)
	}
	return rt
}

// match returns the route for a request's Host header and URL path, or nil.
// It does not allocate unless host has upper-case letters.
func (rt *router) match(host, path string) *route {
	hr := rt.hostRoutes(canonicalHost(host))
	if hr == nil {
		return nil
	}
	if path == "" {
		path = "/"
	}
	for _, r := range hr.routes {
		if prefixMatches(path, r.prefix) {
			return r
		}
	}
	return nil
}

func (rt *router) hostRoutes(host string) *hostRoutes {
	if hr := rt.exact[host]; hr != nil {
		return hr
	}
	for _, w := range rt.wildcards {
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return w.hr
		}
	}
	return rt.anyHost
}

// canonicalHost strips the port, brackets of an IPv6 literal and a trailing
// dot from a Host header, and lowercases it.
func canonicalHost(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	} else if i := strings.IndexByte(host, ':'); i >= 0 && i == strings.LastIndexByte(host, ':') {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host)
}

// prefixMatches reports whether path is prefix or continues it with a new
// segment: "/api" matches "/api" and "/api/x" but not "/apix".
func prefixMatches(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}
