package proxy

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// ProxyHeaders are the request headers only the proxy sets. Whatever a
// client sends under these names, in any case and with "_" for "-", never
// reaches an upstream: forward drops Forwarded and X-Forwarded-*,
// rewrite sets X-Forwarded-* and X-Real-IP anew, and headerPolicy strips
// the rest (HandlerConfig.ProxyHeaders adds more, such as the session-ID
// header).
var ProxyHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}

// rewriteDeletes are the headers forward leaves out of the outbound request
// before it calls rewrite, as ReverseProxy does before Rewrite: headerPolicy
// need not delete them again, only their spellings with "_".
var rewriteDeletes = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// headerPolicy cleans the headers of an outbound request.
type headerPolicy struct {
	// protected holds ProxyHeaders and the configured extras, in the
	// lower-case, "-"-separated form that canonicalKey gives.
	protected map[string]bool
	// canonical holds the same names as http.Header keys, for the common
	// case of a client that sent them as Go canonicalises them, less
	// rewriteDeletes.
	canonical  []string
	underscore bool // keep header names with "_" (nginx: underscores_in_headers on)
}

func newHeaderPolicy(extra []string, keepUnderscore bool) *headerPolicy {
	p := &headerPolicy{protected: map[string]bool{}, underscore: keepUnderscore}
	for _, n := range append(ProxyHeaders[:len(ProxyHeaders):len(ProxyHeaders)], extra...) {
		if n == "" || p.protected[canonicalKey(n)] {
			continue
		}
		p.protected[canonicalKey(n)] = true
		if ck := textproto.CanonicalMIMEHeaderKey(n); !slices.Contains(rewriteDeletes, ck) {
			p.canonical = append(p.canonical, ck)
		}
	}
	return p
}

// canonicalKey folds a header name for comparison: lower case, "_" as "-",
// the way CGI-style upstreams (PHP, WSGI, Rack) read names.
func canonicalKey(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// clean removes from h every protected header under any spelling, and every
// name with "_" unless those are kept. Names without "_" are canonical in an
// http.Header, so they are removed by direct lookup; only names with "_"
// (never canonicalised by net/http) need folding.
func (p *headerPolicy) clean(h http.Header) {
	for _, n := range p.canonical {
		delete(h, n)
	}
	for n := range h {
		if strings.IndexByte(n, '_') < 0 {
			continue
		}
		if !p.underscore || p.protected[canonicalKey(n)] {
			delete(h, n)
		}
	}
}
