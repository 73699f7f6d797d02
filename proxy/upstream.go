package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// Kinds of upstream errors, the values of the kind label of
// edgeproxy_upstream_errors_total.
const (
	// ErrorKindDial: connecting failed (refused, unreachable, DNS, dial
	// timeout); the request was not sent.
	ErrorKindDial = "dial"
	// ErrorKindTimeout: the upstream did not answer in time.
	ErrorKindTimeout = "timeout"
	// ErrorKindTransport: the connection broke or the response was invalid.
	ErrorKindTransport = "transport"
	// ErrorKindCanceled: the client went away; not held against the upstream.
	ErrorKindCanceled = "canceled"
)

// upstream is one server of a pool, with its load and health. Health is the
// conjunction of active checks (down) and passive ejection (ejectedUntil).
// It must not be copied.
type upstream struct {
	url  *url.URL
	name string // url.String(): the metrics label and log field

	inflight atomic.Int64 // requests being proxied to it (least_conn)

	series *upstreamSeries // its metrics; nil without a Registerer

	// down, ejectedUntil and failures are read lock-free on the request
	// path; down and ejectedUntil change only with mu held.
	down         atomic.Bool  // failed active checks
	ejectedUntil atomic.Int64 // end of a passive ejection in Unix ns; 0 if none
	failures     atomic.Int64 // consecutive transport failures

	// mu protects okStreak, failStreak and reported, and serialises health
	// transitions so each is logged and exported once, in order.
	mu         sync.Mutex
	okStreak   int  // consecutive passing active checks
	failStreak int  // consecutive failing active checks
	reported   bool // healthy state last logged and exported
}

// pool is a route's set of upstreams with their balancer and ejection policy.
// It is safe for concurrent use.
type pool struct {
	upstreams []*upstream
	balancer  balancer
	eject     PassiveEjectConfig
	now       func() time.Time
	log       *zap.Logger
	metrics   *upstreamMetrics // nil without a Registerer
}

func newPool(rc *RouteConfig, now func() time.Time, log *zap.Logger, m *upstreamMetrics) *pool {
	p := &pool{
		balancer: newBalancer(rc.balance()),
		eject:    rc.PassiveEject,
		now:      now,
		log:      log,
		metrics:  m,
	}
	for _, raw := range rc.Upstreams {
		u, _ := parseUpstreamURL(raw) // validated by ValidateRoutes
		up := &upstream{url: u, name: u.String(), reported: true}
		up.series = m.series(up.name)
		p.upstreams = append(p.upstreams, up)
		m.setHealthy(up.name, true)
	}
	return p
}

// pick returns an available upstream that is not in tried, or nil.
func (p *pool) pick(now time.Time, tried []*upstream) *upstream {
	return p.balancer.pick(p, now, tried)
}

// usable reports whether u may take a request now: it is healthy and was not
// tried already for this request. An ejection whose cooldown has passed ends
// here.
func (p *pool) usable(u *upstream, now time.Time, tried []*upstream) bool {
	if u.down.Load() || slices.Contains(tried, u) {
		return false
	}
	until := u.ejectedUntil.Load()
	if until == 0 {
		return true
	}
	if now.UnixNano() < until {
		return false
	}
	u.mu.Lock()
	if u.ejectedUntil.CompareAndSwap(until, 0) {
		u.failures.Store(0)
		p.reportLocked(u, "cooldown")
	}
	u.mu.Unlock()
	return !u.down.Load()
}

// transportFailed records a failed attempt on u: connection refused, timeout,
// broken response. After PassiveEject.Failures in a row, u is ejected.
func (p *pool) transportFailed(u *upstream) {
	n := u.failures.Add(1)
	if p.eject.Disabled || n < int64(p.eject.failures()) || u.ejectedUntil.Load() != 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ejectedUntil.Load() == 0 {
		u.ejectedUntil.Store(p.now().Add(p.eject.cooldown()).UnixNano())
		p.reportLocked(u, "passive")
	}
}

// transportOK records an attempt on u that got a response.
func (p *pool) transportOK(u *upstream) {
	if u.failures.Load() != 0 {
		u.failures.Store(0)
	}
}

// checked records the result of an active health check of u.
func (p *pool) checked(u *upstream, ok bool, hc *HealthCheckConfig) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !ok {
		u.okStreak = 0
		u.failStreak++
		if u.failStreak >= hc.unhealthyAfter() {
			u.down.Store(true)
		}
		p.reportLocked(u, "health_check")
		return
	}
	u.failStreak = 0
	u.okStreak++
	if u.okStreak >= hc.healthyAfter() {
		u.down.Store(false)
	}
	// A passing check ends a passive ejection at once.
	if u.ejectedUntil.Swap(0) != 0 {
		u.failures.Store(0)
	}
	p.reportLocked(u, "health_check")
}

// reportLocked logs and exports u's health if it changed. u.mu must be held.
func (p *pool) reportLocked(u *upstream, reason string) {
	healthy := !u.down.Load() && u.ejectedUntil.Load() == 0
	if healthy == u.reported {
		return
	}
	u.reported = healthy
	p.metrics.setHealthy(u.name, healthy)
	if healthy {
		p.log.Info("upstream up", zap.String("upstream", u.name), zap.String("reason", reason))
	} else {
		p.log.Warn("upstream down", zap.String("upstream", u.name), zap.String("reason", reason))
	}
}

// newUpstreamTransport builds the transport to a route's upstreams, which
// owns tlsConfig. It speaks HTTP/1.1 only, which WebSocket upgrades need.
func newUpstreamTransport(rc *RouteConfig, tlsConfig *tls.Config) *upstreamTransport {
	t := &rc.Timeouts
	d := &net.Dialer{Timeout: t.dial(), KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &DialError{Addr: addr, Err: err}
		}
		if rc.SendProxyProtocol != "" {
			if err := writeProxyHeader(ctx, c, rc.SendProxyProtocol); err != nil {
				c.Close()
				return nil, &DialError{Addr: addr, Err: err}
			}
		}
		return c, nil
	}
	cfg := h1Config{
		dial:           dial,
		responseHeader: t.responseHeader(),
		idle:           t.idleConn(),
		maxConns:       cmp.Or(rc.Limits.MaxConnsPerUpstream, DefaultMaxConnsPerUpstream),
		maxIdle:        cmp.Or(rc.Limits.MaxIdleConnsPerUpstream, DefaultMaxIdleConnsPerUpstream),
		noKeepAlive:    rc.SendProxyProtocol != "", // a PROXY header names one client
	}
	std := &http.Transport{
		Proxy:                 nil, // never via HTTP_PROXY: upstreams are addressed directly
		DialContext:           dial,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   t.dial(),
		ResponseHeaderTimeout: cfg.responseHeader,
		IdleConnTimeout:       cfg.idle,
		MaxConnsPerHost:       cfg.maxConns,
		MaxIdleConnsPerHost:   cfg.maxIdle,
		ExpectContinueTimeout: time.Second,
		DisableKeepAlives:     cfg.noKeepAlive,
	}
	return &upstreamTransport{std: std, cfg: cfg}
}

// upstreamMetrics holds the upstream collectors. A nil *upstreamMetrics
// records nothing.
type upstreamMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	healthy  *prometheus.GaugeVec
	client   *prometheus.CounterVec
}

// newUpstreamMetrics creates the collectors and registers them with reg; a
// nil reg gives nil. Collectors already registered by an earlier Handler (a
// reload) are reused.
func newUpstreamMetrics(reg prometheus.Registerer) (*upstreamMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &upstreamMetrics{
		requests: promreg.CounterVec("edgeproxy_upstream_requests_total", "Responses received from upstreams, by upstream and status code.", "upstream", "code"),
		duration: promreg.HistogramVec("edgeproxy_upstream_request_duration_seconds", "Time from sending a request to an upstream to its response headers or failure.", prometheus.DefBuckets, "upstream"),
		errors:   promreg.CounterVec("edgeproxy_upstream_errors_total", "Failed upstream attempts, by upstream and kind (dial, timeout, transport, canceled).", "upstream", "kind"),
		healthy:  promreg.GaugeVec("edgeproxy_upstream_healthy", "1 if the upstream takes requests, 0 if it failed health checks or is ejected.", "upstream"),
		client:   promreg.CounterVec("edgeproxy_client_errors_total", "Requests refused for the client's own fault, by reason (bad_body, body_too_large, body_timeout); never counted against an upstream.", "reason"),
	}
	if err := errors.Join(reuse(reg, &m.client), reuse(reg, &m.requests), reuse(reg, &m.duration), reuse(reg, &m.errors), reuse(reg, &m.healthy)); err != nil {
		return nil, err
	}
	return m, nil
}

// reuse registers *c with reg or, if an earlier Handler registered the
// same collector (a reload), replaces *c with that one.
func reuse[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	var err error
	*c, err = registerOrReuse(reg, *c)
	return err
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		var zero C
		return zero, fmt.Errorf("proxy: registering metrics: %w", err)
	}
	return c, nil
}

// upstreamSeries is one upstream's series of the request collectors, each
// looked up by its labels once, on first use, and kept: a response costs
// no label lookup (issue #13). A series appears in the output once it was
// used, as with WithLabelValues. A nil *upstreamSeries records nothing.
type upstreamSeries struct {
	m        *upstreamMetrics
	name     string
	duration atomic.Pointer[observerChild]
	codes    [500]atomic.Pointer[counterChild] // by status code - 100
}

type (
	observerChild struct{ prometheus.Observer }
	counterChild  struct{ prometheus.Counter }
)

// series returns upstream's series; nil if m is nil.
func (m *upstreamMetrics) series(upstream string) *upstreamSeries {
	if m == nil {
		return nil
	}
	return &upstreamSeries{m: m, name: upstream}
}

func (s *upstreamSeries) response(code int, d time.Duration) {
	if s == nil {
		return
	}
	if code < 100 || code > 599 { // an upstream's odd code: not worth a slot
		s.m.requests.WithLabelValues(s.name, strconv.Itoa(code)).Inc()
	} else {
		c := s.codes[code-100].Load()
		if c == nil {
			c = &counterChild{s.m.requests.WithLabelValues(s.name, strconv.Itoa(code))}
			s.codes[code-100].Store(c) // racing stores store the same child
		}
		c.Inc()
	}
	s.observe(d)
}

func (s *upstreamSeries) failure(kind string, d time.Duration) {
	if s == nil {
		return
	}
	s.m.errors.WithLabelValues(s.name, kind).Inc()
	s.observe(d)
}

func (s *upstreamSeries) observe(d time.Duration) {
	o := s.duration.Load()
	if o == nil {
		o = &observerChild{s.m.duration.WithLabelValues(s.name)}
		s.duration.Store(o)
	}
	o.Observe(d.Seconds())
}

func (m *upstreamMetrics) clientError(reason string) {
	if m == nil {
		return
	}
	m.client.WithLabelValues(reason).Inc()
}

// setHealthy exports one upstream's health. Routes sharing an upstream URL
// share the series; the last change wins.
func (m *upstreamMetrics) setHealthy(upstream string, healthy bool) {
	if m == nil {
		return
	}
	v := 0.0
	if healthy {
		v = 1
	}
	m.healthy.WithLabelValues(upstream).Set(v)
}
