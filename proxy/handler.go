package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// HandlerConfig configures NewHandler. NewHandler does not modify it.
type HandlerConfig struct {
	// Routes are the routes to serve. They must pass ValidateRoutes. With
	// no routes, every request gets 404.
	Routes []RouteConfig
	// Logger receives operational logs: upstreams going down and up, proxy
	// errors. If nil, zap.NewNop() is used.
	Logger *zap.Logger
	// AccessLog receives one "request" line per request at info level. If
	// nil, nothing is logged and a request spends nothing on it.
	AccessLog *zap.Logger
	// AccessFormat is the layout of AccessLog lines. If empty, AccessJSON.
	AccessFormat AccessFormat
	// Registerer receives the edgeproxy_upstream_* metrics. If nil, no
	// metrics are kept. Collectors already registered there by an earlier
	// Handler (a reload) are shared.
	Registerer prometheus.Registerer
	// ProxyHeaders names request headers, beyond the package's
	// ProxyHeaders, that only the proxy or its RequestHook may set (the
	// session-ID header): a client's copy is removed from every request,
	// in any case and with "_" for "-".
	ProxyHeaders []string
	// KeepUnderscoreHeaders forwards header names that contain "_". By
	// default they are dropped, as nginx does (underscores_in_headers
	// off): CGI-style upstreams read "X_Foo" and "X-Foo" as one name.
	KeepUnderscoreHeaders bool
	// CoveredHost, if not nil, reports whether the certificate a
	// connection was served (chosen by its SNI server name) covers a
	// request's Host; a request it does not cover gets 421 Misdirected
	// Request (RFC 9110, Section 15.5.20): HTTP/2 connection reuse for
	// another certificate's host, or domain fronting. Certs.Covers is
	// one. If nil, any Host is served on any connection.
	CoveredHost func(serverName, host string) bool
	// RequestHook, if not nil, is called for every outbound request after
	// its URL and X-Forwarded-For/-Host/-Proto headers are set, to add
	// headers from pr.In (its context carries the connection's values). It
	// runs on the request's goroutine and must not keep pr. It must not
	// change pr.Out.URL, which is rewritten if the request is retried on
	// another upstream.
	RequestHook func(pr *httputil.ProxyRequest)
	// UpstreamTLS is the TLS client configuration for https upstreams; it is
	// cloned. If nil, the system roots and crypto/tls defaults are used.
	UpstreamTLS *tls.Config
	// Transport, if not nil, carries every upstream request and health
	// check instead of a per-route upstream transport, so the routes' timeouts
	// apply only as far as Transport enforces them. An error it returns
	// that wraps a *DialError means nothing was sent and the request may be
	// retried. Tests use it to inject faults.
	Transport http.RoundTripper
	// Now returns the current time, for passive ejection cooldowns. If nil,
	// time.Now is used.
	Now func() time.Time
}

// Handler is the proxy's http.Handler: it routes each request by host and
// path to an upstream pool and proxies it as httputil.ReverseProxy would
// (see exchange.forward). It is
// safe for concurrent use. Active health checks run only between Start and
// Stop; CheckNow runs one round on demand.
//
// Responses the proxy makes itself are short text/plain bodies: 404 when no
// route matches, 503 when the route has no healthy upstream, 502 when the
// upstream failed and 504 when it timed out. A request is retried on another
// upstream only when connecting failed, so that nothing of it was sent.
type Handler struct {
	router     *router
	routes     []*route
	checkers   []*healthChecker
	transports []*upstreamTransport // built by NewHandler; closed idle by Stop
	log        *zap.Logger
	errorLog   *log.Logger // h.log at warn level, for forward's messages
	accessLog  *zap.Logger // nil: none, and no clock read for it
	accessFmt  AccessFormat
	hook       func(*httputil.ProxyRequest)
	covered    func(serverName, host string) bool
	headers    *headerPolicy
	metrics    *upstreamMetrics // nil without a Registerer
	now        func() time.Time

	// runMu protects cancel and done, the health-check loops' lifecycle.
	runMu  sync.Mutex
	cancel context.CancelFunc // stops the loops; nil when not running
	done   chan struct{}      // closed when every loop has returned
}

// route is one compiled RouteConfig.
type route struct {
	index     int
	cfg       RouteConfig
	prefix    string
	pool      *pool
	transport http.RoundTripper
}

// NewHandler validates cfg.Routes and builds the handler. It does no I/O:
// upstreams are first contacted by requests and health checks. The error
// wraps ValidateRoutes' error (use errors.As with *FieldError for details)
// or a metrics registration error.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if err := ValidateRoutes(cfg.Routes); err != nil {
		return nil, fmt.Errorf("proxy: invalid routes:\n%w", err)
	}
	if err := cfg.AccessFormat.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	m, err := newUpstreamMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		log:       cfg.Logger,
		accessLog: cfg.AccessLog,
		accessFmt: cfg.AccessFormat,
		hook:      cfg.RequestHook,
		covered:   cfg.CoveredHost,
		headers:   newHeaderPolicy(cfg.ProxyHeaders, cfg.KeepUnderscoreHeaders),
		metrics:   m,
		now:       cfg.Now,
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.errorLog, _ = zap.NewStdLogAt(h.log, zap.WarnLevel) // fails only for invalid levels
	for i := range cfg.Routes {
		rc := cfg.Routes[i]
		rc.Hosts = slices.Clone(rc.Hosts)
		rc.Upstreams = slices.Clone(rc.Upstreams)
		p := newPool(&rc, h.now, h.log, m)
		base := cfg.Transport
		if base == nil {
			tc, err := rc.TLS.clientConfig(cfg.UpstreamTLS, fmt.Sprintf("routes[%d].tls", i))
			if err != nil {
				return nil, err
			}
			t := newUpstreamTransport(&rc, tc)
			h.transports = append(h.transports, t)
			base = t
		}
		r := &route{index: i, cfg: rc, prefix: rc.pathPrefix(), pool: p, transport: base}
		h.routes = append(h.routes, r)
		if rc.HealthCheck.enabled() {
			h.checkers = append(h.checkers, newHealthChecker(p, rc.HealthCheck, base, h.log))
		}
	}
	h.router = newRouter(h.routes)
	return h, nil
}

// Start starts the active health checks of every route that has them, each
// on its own goroutine, first after a random part of its interval. Calling
// Start while they run does nothing.
func (h *Handler) Start() {
	h.runMu.Lock()
	defer h.runMu.Unlock()
	if h.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range h.checkers {
		wg.Go(func() { c.run(ctx) })
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	h.cancel, h.done = cancel, done
}

// Stop stops the health checks started by Start, waits for them to return
// (a check in progress is canceled and its result dropped) and closes idle
// upstream connections. Requests in flight are not affected. Stop without
// Start, or a second Stop, only closes idle connections.
func (h *Handler) Stop() {
	h.runMu.Lock()
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel, h.done = nil, nil
	}
	h.runMu.Unlock()
	for _, t := range h.transports {
		t.CloseIdleConnections()
	}
}

// CheckNow runs one round of active health checks on every route that has
// them and returns when their results are recorded, or when ctx is done
// (results of canceled checks are dropped). It may run alongside Start's
// loops.
func (h *Handler) CheckNow(ctx context.Context) {
	for _, c := range h.checkers {
		c.round(ctx)
	}
}

// UpstreamHealth is a snapshot of one upstream, as reported by Handler.Health.
type UpstreamHealth struct {
	Route    int    // index in HandlerConfig.Routes
	Upstream string // URL as configured, normalised
	Healthy  bool   // passes active checks and is not ejected
	InFlight int64  // requests being proxied to it
}

// Health returns the state of every upstream of every route, in
// configuration order.
func (h *Handler) Health() []UpstreamHealth {
	now := h.now()
	var out []UpstreamHealth
	for _, r := range h.routes {
		for _, u := range r.pool.upstreams {
			out = append(out, UpstreamHealth{
				Route:    r.index,
				Upstream: u.name,
				Healthy:  r.pool.usable(u, now, nil),
				InFlight: u.inflight.Load(),
			})
		}
	}
	return out
}

// exchange is one request's way through the proxy. ServeHTTP makes one per
// request (one allocation for all of the fields) and forwards it; rewrite,
// RoundTrip and proxyError are forward's steps, so the per-request state is
// plain fields that all of them share. They run on the request's goroutine,
// except that the transport may read body on its own (see clientBody) and
// got1xx runs where the transport reads the response. It fits the 640-byte
// size class (TestExchangeSize): what only a retry or an injected Transport
// needs is made when they need it, not kept in every exchange, which was
// 904 bytes, a 1,024-byte allocation per request (#13).
type exchange struct {
	h        *Handler
	route    *route
	in       *http.Request       // inbound request
	w        http.ResponseWriter // the server's writer, for the body's read deadline
	rec      accessRecorder      // wraps w; what the response is written to
	body     *clientBody         // wraps the outbound body; nil until the first attempt with one
	upstream *upstream           // upstream of the current attempt; counted in flight
	tried    []*upstream         // upstreams attempted, in order
	triedBuf [2]*upstream

	out  http.Request          // the outbound request, unless forward needed a new context
	url  url.URL               // the outbound request's URL
	vals []string              // backing array of the outbound header's values
	pr   httputil.ProxyRequest // given to rewrite and the RequestHook

	// rtMu protects rtDone: got1xx writes to rec only until the round trip
	// returned.
	rtMu   sync.Mutex
	rtDone bool
}

// ServeHTTP routes and proxies r; see Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		growStack() // a new goroutine per request
	}
	x := &exchange{h: h, in: r, w: w}
	rec := &x.rec
	rec.ResponseWriter = w
	if h.accessLog != nil {
		defer h.logAccess(rec, r, x, time.Now()) // also on panic(http.ErrAbortHandler)
	}

	if h.covered != nil && r.TLS != nil && !h.covered(r.TLS.ServerName, r.Host) {
		writeProxyError(rec, http.StatusMisdirectedRequest)
		return
	}
	rt := h.router.match(r.Host, r.URL.Path)
	if rt == nil {
		writeProxyError(rec, http.StatusNotFound)
		return
	}
	x.route = rt
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// RFC 9112, Section 6.1: after a request with both Content-Length
		// and Transfer-Encoding the connection must be closed. net/http
		// drops the Content-Length before a handler can see it, so close
		// after every chunked HTTP/1.1 request.
		rec.Header().Set("Connection", "close")
	}
	if max := rt.cfg.Limits.maxBodyBytes(); max >= 0 && r.ContentLength > max {
		h.clientError(rec, r, errBodyTooLarge) // before a byte goes upstream
		return
	}
	u := rt.pool.pick(h.now(), nil)
	if u == nil {
		writeProxyError(rec, http.StatusServiceUnavailable)
		return
	}
	x.upstream = u
	x.tried = append(x.triedBuf[:0], u)
	u.inflight.Add(1)
	defer func() { x.upstream.inflight.Add(-1) }()

	x.forward(rec, r)
}

// rewrite addresses pr.Out to the upstream and sets the proxy's headers.
func (x *exchange) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(x.upstream.url)
	if !x.route.cfg.RewriteHost {
		pr.Out.Host = pr.In.Host // SetURL cleared it: Host would be the upstream's
	}
	x.h.headers.clean(pr.Out.Header)
	if up := pr.Out.Header.Get("Upgrade"); up != "" && !x.route.allowsUpgrade(up) {
		// Not an upgrade this route proxies: the upstream sees a plain
		// request (RFC 9110, Section 7.8: a server may ignore Upgrade).
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
	}
	x.setXForwarded(pr) // X-Forwarded-Proto is "https" when pr.In.TLS != nil
	if ip := pr.Out.Header.Get("X-Forwarded-For"); ip != "" {
		x.setHeader(pr.Out.Header, "X-Real-Ip", ip)
	}
	if x.h.hook != nil {
		x.h.hook(pr)
	}
}

// allowsUpgrade reports whether the route proxies an Upgrade to proto.
func (rt *route) allowsUpgrade(proto string) bool {
	return slices.ContainsFunc(rt.cfg.upgrades(), func(p string) bool { return strings.EqualFold(p, proto) })
}

// proxyError answers a request whose attempt failed before a response
// header was written to the client. A failure of the client's own
// body is answered as the client's error.
func (x *exchange) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if berr := x.body.failed(); berr != nil {
		x.h.clientError(w, r, berr)
		return
	}
	name := x.upstream.name
	kind := upstreamErrorKind(r.Context(), err)
	if kind == ErrorKindCanceled {
		x.h.log.Debug("upstream request canceled", zap.String("upstream", name), zap.Error(err))
	} else {
		x.h.log.Warn("upstream error", zap.String("upstream", name), zap.String("kind", kind), zap.Error(err))
	}
	if isTimeout(err) {
		writeProxyError(w, http.StatusGatewayTimeout)
		return
	}
	writeProxyError(w, http.StatusBadGateway)
}

// Kinds of client errors, the values of the reason label of
// edgeproxy_client_errors_total.
const (
	// ClientErrorBody: the request body broke off or was malformed
	// (chunk framing, fewer bytes than its Content-Length).
	ClientErrorBody = "bad_body"
	// ClientErrorBodyTooLarge: the body passed the route's max_body_bytes.
	ClientErrorBodyTooLarge = "body_too_large"
	// ClientErrorBodyTimeout: the body came slower than the route's
	// body_timeout and body_min_rate allow.
	ClientErrorBodyTimeout = "body_timeout"
)

// clientError answers a request whose body failed: 413, 408 or 400, and an
// HTTP/1.1 connection closed, since the rest of the body is not worth
// reading. It is counted as the client's error, never the upstream's.
func (h *Handler) clientError(w http.ResponseWriter, r *http.Request, err error) {
	code, reason := http.StatusBadRequest, ClientErrorBody
	switch {
	case errors.Is(err, errBodyTooLarge):
		code, reason = http.StatusRequestEntityTooLarge, ClientErrorBodyTooLarge
	case isTimeout(err):
		code, reason = http.StatusRequestTimeout, ClientErrorBodyTimeout
	}
	h.metrics.clientError(reason)
	h.log.Debug("client error", zap.String("reason", reason), zap.Error(err))
	if r.ProtoMajor == 1 {
		// Close, and stop reading now: after the handler net/http would
		// read up to 256 KiB of the unread body, at the client's pace.
		// HTTP/2: only this stream ends.
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	writeProxyError(w, code)
}

var proxyErrorBodies = map[int]string{
	http.StatusBadRequest:            "400 bad request: the request body was malformed or incomplete",
	http.StatusNotFound:              "404 not found: no route for this host and path",
	http.StatusRequestTimeout:        "408 request timeout: the request body came too slowly",
	http.StatusRequestEntityTooLarge: "413 content too large: the request body is over this route's limit",
	http.StatusMisdirectedRequest:    "421 misdirected request: this connection's certificate does not cover the requested host",
	http.StatusBadGateway:            "502 bad gateway: the upstream failed",
	http.StatusServiceUnavailable:    "503 service unavailable: no healthy upstream",
	http.StatusGatewayTimeout:        "504 gateway timeout: the upstream did not answer in time",
}

func writeProxyError(w http.ResponseWriter, code int) {
	http.Error(w, proxyErrorBodies[code], code)
}

// upstreamErrorKind classifies a failed attempt for metrics, logs and retry.
func upstreamErrorKind(ctx context.Context, err error) string {
	var de *DialError
	switch {
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return ErrorKindCanceled
	case errors.As(err, &de):
		return ErrorKindDial
	case isTimeout(err):
		return ErrorKindTimeout
	}
	return ErrorKindTransport
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// DialError is a failure to connect to an upstream, marked where it
// happens (the transport's dialer): nothing of the request was sent, so it
// may be retried on another upstream. Any other error from the transport
// may come after bytes reached the upstream.
type DialError struct {
	Addr string // host:port dialled
	Err  error
}

func (e *DialError) Error() string { return "dialing upstream " + e.Addr + ": " + e.Err.Error() }

func (e *DialError) Unwrap() error { return e.Err }

// RoundTrip is forward's round trip. It sends the
// request to the upstream ServeHTTP chose and, when connecting to it failed
// (a *DialError), to another usable upstream of the pool, each at most once,
// and only while the request body is unread: it never resends a request that
// may have reached an upstream. Each attempt's outcome goes to the pool and
// the metrics, except a failure of the client's own body, which says nothing
// about the upstream.
func (x *exchange) RoundTrip(req *http.Request) (*http.Response, error) {
	p := x.route.pool
	if req.Body != nil && req.Body != http.NoBody {
		// Wrapped here rather than in ServeHTTP: forward's own wrapper
		// fails every Read once the transport closed it, which a failed
		// dial does; clientBody holds that Close back. req is forward's
		// own copy.
		x.body = newClientBody(req.Body, &x.route.cfg.Limits, http.NewResponseController(x.w), time.Now())
		req.Body = x.body
	}
	for {
		u := x.upstream
		start := time.Now()
		var resp *http.Response
		var err error
		if t, ok := x.route.transport.(*upstreamTransport); ok {
			resp, err = t.roundTrip(req, x) // x.got1xx takes 1xx responses
		} else {
			resp, err = x.route.transport.RoundTrip(req) // 1xx through forward's ClientTrace
		}
		if err == nil {
			p.transportOK(u)
			u.series.response(resp.StatusCode, time.Since(start))
			return resp, nil
		}
		if x.body.failed() != nil {
			return nil, err // the client's fault: see proxyError
		}
		kind := upstreamErrorKind(req.Context(), err)
		u.series.failure(kind, time.Since(start))
		if kind != ErrorKindCanceled {
			p.transportFailed(u)
		}
		if kind != ErrorKindDial || req.Context().Err() != nil || x.body != nil && x.body.read.Load() {
			return nil, err
		}
		next := p.pick(p.now(), x.tried)
		if next == nil {
			return nil, err
		}
		x.tried = append(x.tried, next)
		next.inflight.Add(1)
		u.inflight.Add(-1)
		x.upstream = next
		req = x.retarget(req, next)
	}
}

// retarget returns a copy of out addressed to u, built from the outbound URL
// as it was before rewrite's SetURL: the inbound URL with its query cleaned,
// as forward made it (computed again rather than kept in every exchange,
// for the rare retry). The Host header is kept.
func (x *exchange) retarget(out *http.Request, u *upstream) *http.Request {
	target := *x.in.URL
	target.RawQuery = cleanQueryParams(target.RawQuery)
	pr := &httputil.ProxyRequest{In: x.in, Out: &http.Request{URL: &target}}
	pr.SetURL(u.url)
	r := out.Clone(out.Context()) // shares out.Body
	r.URL = pr.Out.URL
	return r
}
