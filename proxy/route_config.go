package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Balancing strategies, the values of RouteConfig.Balance.
const (
	// BalanceRoundRobin sends requests to healthy upstreams in turn.
	BalanceRoundRobin = "round_robin"
	// BalanceLeastConn sends each request to the healthy upstream with the
	// fewest requests in flight.
	BalanceLeastConn = "least_conn"
)

// Defaults applied to zero-valued route configuration fields.
const (
	DefaultPathPrefix = "/"
	DefaultBalance    = BalanceRoundRobin

	DefaultHealthCheckInterval = 10 * time.Second
	DefaultHealthCheckTimeout  = 2 * time.Second
	DefaultExpectStatus        = 200
	DefaultUnhealthyAfter      = 3
	DefaultHealthyAfter        = 2

	DefaultEjectFailures = 3
	DefaultEjectCooldown = 30 * time.Second

	DefaultDialTimeout           = 5 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
)

// RouteConfig sends requests for some hosts and a path prefix to a pool of
// upstreams. The zero value of every optional field selects the default named
// in its doc; ValidateRoutes checks a route list before NewHandler uses it.
type RouteConfig struct {
	// Hosts lists the host names this route serves: exact names
	// ("example.com") or one wildcard label in front of a suffix
	// ("*.example.com" matches a.example.com and a.b.example.com, not
	// example.com). Matching ignores case and the port. If empty, the route
	// serves any host that no other route names.
	Hosts []string `yaml:"hosts"`
	// PathPrefix selects requests whose path is the prefix or continues it
	// with a new segment: "/api" matches "/api" and "/api/x" but not
	// "/apix"; "/api/" matches "/api/x" only. The path is forwarded
	// unchanged. If empty, DefaultPathPrefix ("/", every path) is used.
	PathPrefix string `yaml:"path_prefix"`
	// Upstreams lists the upstream base URLs, http or https, for example
	// "http://10.0.0.5:8080". A path in the URL is prepended to the request
	// path. At least one is required.
	Upstreams []string `yaml:"upstreams"`
	// Balance is BalanceRoundRobin or BalanceLeastConn. If empty,
	// DefaultBalance is used.
	Balance string `yaml:"balance"`
	// HealthCheck configures active health checks. They are off unless
	// HealthCheck.Path is set.
	HealthCheck HealthCheckConfig `yaml:"health_check"`
	// PassiveEject configures ejection of upstreams after connection
	// failures. It is on by default.
	PassiveEject PassiveEjectConfig `yaml:"passive_eject"`
	// Timeouts bounds upstream connections.
	Timeouts UpstreamTimeouts `yaml:"timeouts"`
	// Limits bounds request bodies and the connections to the upstreams.
	Limits RouteLimits `yaml:"limits"`
	// RewriteHost sends the upstream's host[:port] as the Host header.
	// If false, the client's Host goes to the upstream unchanged, as
	// Caddy, HAProxy and Traefik do.
	RewriteHost bool `yaml:"rewrite_host"`
	// TLS configures the connections to https upstreams. If zero, the
	// system roots verify them and no client certificate is sent.
	TLS UpstreamTLSConfig `yaml:"tls"`
	// Upgrades lists the protocols a client may switch to with an HTTP/1.1
	// Upgrade header, compared without case. If empty, DefaultUpgrades
	// (websocket only). For any other protocol the Upgrade header is
	// dropped and the request proxied as a plain one. "h2c" is refused by
	// ValidateRoutes: a cleartext HTTP/2 tunnel would pass requests the
	// proxy never parsed.
	Upgrades []string `yaml:"upgrades"`
	// SendProxyProtocol, "v1" or "v2", opens every connection to the
	// upstreams with a PROXY protocol header naming the client
	// (proxyproto.go). A header names one client, so such connections
	// are not reused: each request gets one of its own. Health checks
	// send a LOCAL (v2) or UNKNOWN (v1) header. Empty: no header.
	SendProxyProtocol string `yaml:"send_proxy_protocol"`
}

// UpstreamTLSConfig configures TLS to a route's https upstreams. Files are
// read when the handler is built (start and every reload).
type UpstreamTLSConfig struct {
	// CAFiles are PEM files of the CAs that verify the upstreams. If
	// empty, the system roots are used.
	CAFiles []string `yaml:"ca_files"`
	// ServerName is the name verified in the upstream's certificate and
	// sent as SNI. If empty, the upstream URL's host.
	ServerName string `yaml:"server_name"`
	// ClientCert and ClientKey are a PEM certificate and key presented to
	// upstreams that ask for one. Both or neither.
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

func (c *UpstreamTLSConfig) isZero() bool {
	return len(c.CAFiles) == 0 && c.ServerName == "" && c.ClientCert == "" && c.ClientKey == "" && c.MinVersion == ""
}

// DefaultUpgrades are the protocols RouteConfig.Upgrades allows when empty.
var DefaultUpgrades = []string{"websocket"}

// RouteLimits bounds what one request may send through a route and how many
// connections the route opens to each upstream.
//
// The body deadline follows Apache's mod_reqtimeout: a body must arrive
// within BodyTimeout, extended by one second for every BodyMinRate bytes
// received, so large uploads at a fair speed pass and a client that trickles
// bytes is cut. A request whose body fails (too large, too slow, malformed
// framing, shorter than its Content-Length) is the client's fault: it gets
// 413, 408 or 400 and never counts against an upstream.
type RouteLimits struct {
	// MaxBodyBytes caps a request body; a larger one gets 413. If zero,
	// DefaultMaxBodyBytes is used; -1 means no limit.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// BodyTimeout is the time a request body has to arrive before
	// BodyMinRate extends it. If zero, DefaultBodyTimeout is used.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// BodyMinRate is the slowest accepted body rate, in bytes per second.
	// If zero, DefaultBodyMinRate is used.
	BodyMinRate int64 `yaml:"body_min_rate"`
	// MaxConnsPerUpstream caps the connections open to one upstream, idle
	// or busy; requests over it wait for a free connection. If zero,
	// DefaultMaxConnsPerUpstream is used. To an http upstream, Upgrade
	// (WebSocket) and Expect: 100-continue requests take connections
	// capped apart, by the same number (upstreamTransport).
	MaxConnsPerUpstream int `yaml:"max_conns_per_upstream"`
	// MaxIdleConnsPerUpstream caps the idle connections kept for reuse per
	// upstream. If zero, DefaultMaxIdleConnsPerUpstream is used.
	MaxIdleConnsPerUpstream int `yaml:"max_idle_conns_per_upstream"`
}

// Defaults for RouteLimits.
const (
	DefaultMaxBodyBytes            = 100 << 20
	DefaultBodyTimeout             = 20 * time.Second
	DefaultBodyMinRate             = 500
	DefaultMaxConnsPerUpstream     = 512
	DefaultMaxIdleConnsPerUpstream = 256
)

// HealthCheckConfig configures active health checks: every Interval, a GET of
// Path on each upstream must answer ExpectStatus within Timeout. Upstreams
// start healthy.
type HealthCheckConfig struct {
	// Path is requested on each upstream's scheme://host (the upstream URL's
	// own path is not prepended), for example "/healthz". If empty, active
	// health checks are disabled and the other fields must be zero.
	Path string `yaml:"path"`
	// Interval is the time between checks of one upstream. If zero,
	// DefaultHealthCheckInterval is used.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one check and must be shorter than Interval. If zero,
	// DefaultHealthCheckTimeout is used, capped at the interval.
	Timeout time.Duration `yaml:"timeout"`
	// ExpectStatus is the status code of a passing check; any other status,
	// a redirect included, fails. If zero, DefaultExpectStatus (200) is used.
	ExpectStatus int `yaml:"expect_status"`
	// UnhealthyAfter is how many consecutive failed checks mark a healthy
	// upstream down. If zero, DefaultUnhealthyAfter is used.
	UnhealthyAfter int `yaml:"unhealthy_after"`
	// HealthyAfter is how many consecutive passing checks mark a down
	// upstream up again. If zero, DefaultHealthyAfter is used. One passing
	// check always ends a passive ejection.
	HealthyAfter int `yaml:"healthy_after"`
}

// PassiveEjectConfig configures passive ejection: after Failures consecutive
// transport failures (refused or timed-out connections, broken responses) an
// upstream takes no requests for Cooldown, or until an active check passes.
type PassiveEjectConfig struct {
	// Disabled turns passive ejection off.
	Disabled bool `yaml:"disabled"`
	// Failures is the number of consecutive failures that ejects an
	// upstream. If zero, DefaultEjectFailures is used.
	Failures int `yaml:"failures"`
	// Cooldown is how long an ejected upstream rests. If zero,
	// DefaultEjectCooldown is used.
	Cooldown time.Duration `yaml:"cooldown"`
}

// UpstreamTimeouts bounds the connections to a route's upstreams.
type UpstreamTimeouts struct {
	// DialTimeout bounds connecting to an upstream (TCP, and TLS for https
	// upstreams). If zero, DefaultDialTimeout is used.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ResponseHeaderTimeout bounds the wait for an upstream's response
	// headers after the request is written; expiry answers 504. If zero,
	// DefaultResponseHeaderTimeout is used.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// IdleConnTimeout is how long an idle upstream connection is kept for
	// reuse. If zero, DefaultIdleConnTimeout is used.
	IdleConnTimeout time.Duration `yaml:"idle_conn_timeout"`
}

func (c *RouteConfig) pathPrefix() string {
	if c.PathPrefix == "" {
		return DefaultPathPrefix
	}
	return c.PathPrefix
}

func (c *RouteConfig) balance() string {
	if c.Balance == "" {
		return DefaultBalance
	}
	return c.Balance
}

func (c *HealthCheckConfig) enabled() bool { return c.Path != "" }

func (c *HealthCheckConfig) interval() time.Duration {
	return durationOr(c.Interval, DefaultHealthCheckInterval)
}

func (c *HealthCheckConfig) timeout() time.Duration {
	if c.Timeout == 0 {
		return min(DefaultHealthCheckTimeout, c.interval())
	}
	return c.Timeout
}

func (c *HealthCheckConfig) expectStatus() int {
	return intOr(c.ExpectStatus, DefaultExpectStatus)
}

func (c *HealthCheckConfig) unhealthyAfter() int {
	return intOr(c.UnhealthyAfter, DefaultUnhealthyAfter)
}

func (c *HealthCheckConfig) healthyAfter() int {
	return intOr(c.HealthyAfter, DefaultHealthyAfter)
}

func (c *PassiveEjectConfig) failures() int { return intOr(c.Failures, DefaultEjectFailures) }

func (c *PassiveEjectConfig) cooldown() time.Duration {
	return durationOr(c.Cooldown, DefaultEjectCooldown)
}

func (c *UpstreamTimeouts) dial() time.Duration {
	return durationOr(c.DialTimeout, DefaultDialTimeout)
}

func (c *UpstreamTimeouts) responseHeader() time.Duration {
	return durationOr(c.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
}

func (c *UpstreamTimeouts) idleConn() time.Duration {
	return durationOr(c.IdleConnTimeout, DefaultIdleConnTimeout)
}

// maxBodyBytes returns the body cap, or -1 for none.
func (c *RouteLimits) maxBodyBytes() int64 { return cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes) }

func (c *RouteLimits) bodyTimeout() time.Duration { return cmp.Or(c.BodyTimeout, DefaultBodyTimeout) }

func (c *RouteLimits) bodyMinRate() int64 { return cmp.Or(c.BodyMinRate, DefaultBodyMinRate) }

func (c *RouteConfig) upgrades() []string {
	if len(c.Upgrades) == 0 {
		return DefaultUpgrades
	}
	return c.Upgrades
}

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func intOr(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// FieldError is one problem found by ValidateRoutes. Path is the field's
// location in the configuration, such as "routes[1].upstreams[0]", and Msg
// quotes the bad value and says what is allowed.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// ValidateRoutes checks routes as NewHandler would use them and returns every
// problem found, joined with errors.Join, or nil. Each problem is a
// *FieldError whose path starts with "routes[i]". It does no I/O: upstreams
// are not contacted. Unknown YAML keys are the decoder's to reject
// (yaml.Decoder.KnownFields).
func ValidateRoutes(routes []RouteConfig) error {
	v := &routeValidator{}
	type claim struct{ host, prefix string }
	claimed := map[claim]int{} // (host, prefix) -> index of the route that has it
	whole := map[string]int{}  // canonical hosts+prefix -> route index
	for i := range routes {
		rc := &routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		v.route(path, rc)

		hosts := make([]string, 0, len(rc.Hosts))
		for _, h := range rc.Hosts {
			hosts = append(hosts, strings.ToLower(h))
		}
		slices.Sort(hosts)
		hosts = slices.Compact(hosts)
		key := strings.Join(hosts, ",") + " " + rc.pathPrefix()
		if j, dup := whole[key]; dup {
			v.addf(path, "duplicate of routes[%d] (same hosts and path_prefix %q)", j, rc.pathPrefix())
			continue
		}
		whole[key] = i
		if len(rc.Hosts) == 0 {
			c := claim{"", rc.pathPrefix()}
			if j, dup := claimed[c]; dup {
				v.addf(path+".path_prefix", "%q for any host is already routed by routes[%d]", c.prefix, j)
			}
			claimed[c] = i
			continue
		}
		for k, h := range rc.Hosts {
			c := claim{strings.ToLower(h), rc.pathPrefix()}
			if j, dup := claimed[c]; dup && j != i {
				v.addf(fmt.Sprintf("%s.hosts[%d]", path, k), "%q with path_prefix %q is already routed by routes[%d]", h, c.prefix, j)
			}
			claimed[c] = i
		}
	}
	return errors.Join(v.errs...)
}

type routeValidator struct {
	errs []error
}

func (v *routeValidator) addf(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *routeValidator) route(path string, rc *RouteConfig) {
	for k, h := range rc.Hosts {
		hp := fmt.Sprintf("%s.hosts[%d]", path, k)
		if msg := hostPatternProblem(h); msg != "" {
			v.addf(hp, "%q: %s", h, msg)
		} else if j := slices.IndexFunc(rc.Hosts[:k], func(o string) bool { return strings.EqualFold(o, h) }); j >= 0 {
			v.addf(hp, "%q: duplicate of hosts[%d]", h, j)
		}
	}
	if p := rc.PathPrefix; p != "" {
		if !strings.HasPrefix(p, "/") {
			v.addf(path+".path_prefix", "%q: must start with \"/\"", p)
		} else if strings.ContainsAny(p, "?#") {
			v.addf(path+".path_prefix", "%q: must not contain \"?\" or \"#\"", p)
		}
	}
	if len(rc.Upstreams) == 0 {
		v.addf(path+".upstreams", "must list at least one upstream URL, such as \"http://127.0.0.1:8080\"")
	}
	for k, raw := range rc.Upstreams {
		up := fmt.Sprintf("%s.upstreams[%d]", path, k)
		if _, msg := parseUpstreamURL(raw); msg != "" {
			v.addf(up, "%q: %s", raw, msg)
		} else if j := slices.Index(rc.Upstreams[:k], raw); j >= 0 {
			v.addf(up, "%q: duplicate of upstreams[%d]", raw, j)
		}
	}
	if s := rc.SendProxyProtocol; s != "" && s != SendProxyV1 && s != SendProxyV2 {
		v.addf(path+".send_proxy_protocol", "%q: must be v1 or v2", s)
	}
	if b := rc.Balance; b != "" && b != BalanceRoundRobin && b != BalanceLeastConn {
		v.addf(path+".balance", "%q: must be %s or %s", b, BalanceRoundRobin, BalanceLeastConn)
	}
	v.healthCheck(path+".health_check", &rc.HealthCheck)

	pe := &rc.PassiveEject
	v.nonNegativeInt(path+".passive_eject.failures", pe.Failures)
	v.nonNegativeDuration(path+".passive_eject.cooldown", pe.Cooldown)

	t := &rc.Timeouts
	v.nonNegativeDuration(path+".timeouts.dial_timeout", t.DialTimeout)
	v.nonNegativeDuration(path+".timeouts.response_header_timeout", t.ResponseHeaderTimeout)
	v.nonNegativeDuration(path+".timeouts.idle_conn_timeout", t.IdleConnTimeout)

	if ut := &rc.TLS; !ut.isZero() {
		if !slices.ContainsFunc(rc.Upstreams, func(u string) bool { return strings.HasPrefix(strings.ToLower(u), "https://") }) {
			v.addf(path+".tls", "set, but no upstream of this route is https://")
		}
		if (ut.ClientCert == "") != (ut.ClientKey == "") {
			v.addf(path+".tls", "client_cert and client_key go together: got only one")
		}
		if _, err := ParseTLSVersion(ut.MinVersion); err != nil {
			v.addf(path+".tls.min_version", "%v", err)
		}
	}

	l := &rc.Limits
	if l.MaxBodyBytes < -1 {
		v.addf(path+".limits.max_body_bytes", "must be positive, or -1 for no limit, got %d", l.MaxBodyBytes)
	}
	v.nonNegativeDuration(path+".limits.body_timeout", l.BodyTimeout)
	if l.BodyMinRate < 0 {
		v.addf(path+".limits.body_min_rate", "must be positive (bytes per second), got %d", l.BodyMinRate)
	}
	v.nonNegativeInt(path+".limits.max_conns_per_upstream", l.MaxConnsPerUpstream)
	v.nonNegativeInt(path+".limits.max_idle_conns_per_upstream", l.MaxIdleConnsPerUpstream)
	for k, p := range rc.Upgrades {
		up := fmt.Sprintf("%s.upgrades[%d]", path, k)
		switch {
		case strings.EqualFold(p, "h2c"):
			v.addf(up, "%q: never allowed: a cleartext HTTP/2 tunnel would carry requests the proxy never parsed", p)
		case p == "" || strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) }) >= 0:
			v.addf(up, "%q: not a protocol name (an HTTP token such as \"websocket\")", p)
		}
	}
}

func (v *routeValidator) healthCheck(path string, hc *HealthCheckConfig) {
	if hc.Path == "" {
		if *hc != (HealthCheckConfig{}) {
			v.addf(path+".path", "required when other health_check fields are set (health checks are off without it)")
		}
		return
	}
	if !strings.HasPrefix(hc.Path, "/") {
		v.addf(path+".path", "%q: must start with \"/\"", hc.Path)
	} else if _, err := url.Parse(hc.Path); err != nil {
		v.addf(path+".path", "%q: not a valid URL path", hc.Path)
	}
	intervalOK := v.nonNegativeDuration(path+".interval", hc.Interval)
	if v.nonNegativeDuration(path+".timeout", hc.Timeout) && intervalOK && hc.Timeout >= hc.interval() {
		v.addf(path+".timeout", "%q: must be shorter than the interval %q", hc.Timeout, hc.interval())
	}
	if s := hc.ExpectStatus; s != 0 && (s < 100 || s > 599) {
		v.addf(path+".expect_status", "must be an HTTP status code from 100 to 599, got %d", s)
	}
	v.nonNegativeInt(path+".unhealthy_after", hc.UnhealthyAfter)
	v.nonNegativeInt(path+".healthy_after", hc.HealthyAfter)
}

// nonNegativeDuration reports whether d is valid: zero (the default) or
// positive.
func (v *routeValidator) nonNegativeDuration(path string, d time.Duration) bool {
	if d < 0 {
		v.addf(path, "must be positive, got %q", d)
		return false
	}
	return true
}

func (v *routeValidator) nonNegativeInt(path string, n int) {
	if n < 0 {
		v.addf(path, "must be at least 1, got %d", n)
	}
}

// hostPatternProblem returns why h is not a valid Hosts entry, or "".
func hostPatternProblem(h string) string {
	name := h
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		if rest == "" {
			return `wildcard needs a domain after "*.", as in "*.example.com"`
		}
		name = rest
	}
	switch {
	case h == "":
		return "must not be empty"
	case strings.Contains(name, "*"):
		return `"*" is only allowed as the whole first label, as in "*.example.com"`
	case strings.Contains(name, ":"):
		return "must not include a port (matching ignores the port)"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return "must not have an empty label (leading, trailing or double dot)"
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("invalid character %q: use letters, digits, '-' and '.'", c)
			}
		}
	}
	return ""
}

// parseUpstreamURL parses an Upstreams entry. On failure it returns a reason
// for FieldError.Msg.
func parseUpstreamURL(raw string) (*url.URL, string) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, "not a URL: " + err.Error()
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, "scheme must be http or https"
	case u.Host == "" || u.Hostname() == "":
		return nil, "missing host, as in \"http://10.0.0.5:8080\""
	case u.User != nil:
		return nil, "must not contain user info"
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, "must not have a query or fragment"
	}
	return u, ""
}
