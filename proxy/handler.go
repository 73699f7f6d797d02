package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
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
	// nil, zap.NewNop() is used and nothing is logged.
	AccessLog *zap.Logger
	// Registerer receives the edgeproxy_upstream_* metrics. If nil, no
	// metrics are kept. Collectors already registered there by an earlier
	// Handler (a reload) are shared.
	Registerer prometheus.Registerer
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
	// check instead of a per-route *http.Transport, so the routes' timeouts
	// apply only as far as Transport enforces them. Errors it returns are
	// classified like http.Transport's: a *net.OpError with Op "dial" means
	// nothing was sent and the request may be retried. Tests use it to
	// inject faults.
	Transport http.RoundTripper
	// Now returns the current time, for passive ejection cooldowns. If nil,
	// time.Now is used.
	Now func() time.Time
}

// Handler is the proxy's http.Handler: it routes each request by host and
// path to an upstream pool and proxies it with httputil.ReverseProxy. It is
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
	transports []*http.Transport // built by NewHandler; closed idle by Stop
	log        *zap.Logger
	accessLog  *zap.Logger
	hook       func(*httputil.ProxyRequest)
	now        func() time.Time

	// runMu protects cancel and done, the health-check loops' lifecycle.
	runMu  sync.Mutex
	cancel context.CancelFunc // stops the loops; nil when not running
	done   chan struct{}      // closed when every loop has returned
}

// route is one compiled RouteConfig.
type route struct {
	index  int
	cfg    RouteConfig
	prefix string
	pool   *pool
	proxy  *httputil.ReverseProxy
}

// NewHandler validates cfg.Routes and builds the handler. It does no I/O:
// upstreams are first contacted by requests and health checks. The error
// wraps ValidateRoutes' error (use errors.As with *FieldError for details)
// or a metrics registration error.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if err := ValidateRoutes(cfg.Routes); err != nil {
		return nil, fmt.Errorf("proxy: invalid routes:\n%w", err)
	}
	m, err := newUpstreamMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		log:       cfg.Logger,
		accessLog: cfg.AccessLog,
		hook:      cfg.RequestHook,
		now:       cfg.Now,
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.accessLog == nil {
		h.accessLog = zap.NewNop()
	}
	if h.now == nil {
		h.now = time.Now
	}
	stdLog, _ := zap.NewStdLogAt(h.log, zap.WarnLevel) // fails only for invalid levels
	for i := range cfg.Routes {
		rc := cfg.Routes[i]
		rc.Hosts = slices.Clone(rc.Hosts)
		rc.Upstreams = slices.Clone(rc.Upstreams)
		p := newPool(&rc, h.now, h.log, m)
		base := cfg.Transport
		if base == nil {
			t := newUpstreamTransport(&rc.Timeouts, cfg.UpstreamTLS)
			h.transports = append(h.transports, t)
			base = t
		}
		r := &route{index: i, cfg: rc, prefix: rc.pathPrefix(), pool: p}
		r.proxy = &httputil.ReverseProxy{
			Rewrite:      h.rewrite,
			Transport:    &retryTransport{base: base, pool: p, metrics: m},
			ErrorHandler: h.proxyError,
			ErrorLog:     stdLog,
		}
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

// proxyState is the per-request state shared by ServeHTTP, rewrite, the
// retry transport, the error handler and the access log. They all run on the
// request's goroutine, so it needs no lock.
type proxyState struct {
	in       *http.Request // inbound request as given to ReverseProxy
	upstream *upstream     // upstream of the current attempt; counted in flight
	tried    []*upstream   // upstreams attempted, in order
	triedBuf [2]*upstream
	outURL   url.URL // outbound URL before SetURL, the base for retries
}

type proxyStateKey struct{}

// ServeHTTP routes and proxies r; see Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &accessRecorder{ResponseWriter: w}
	st := &proxyState{}
	defer h.logAccess(rec, r, st, start) // also on panic(http.ErrAbortHandler)

	rt := h.router.match(r.Host, r.URL.Path)
	if rt == nil {
		writeProxyError(rec, http.StatusNotFound)
		return
	}
	u := rt.pool.pick(h.now(), nil)
	if u == nil {
		writeProxyError(rec, http.StatusServiceUnavailable)
		return
	}
	st.upstream = u
	st.tried = append(st.triedBuf[:0], u)
	u.inflight.Add(1)
	defer func() { st.upstream.inflight.Add(-1) }()

	st.in = r.WithContext(context.WithValue(r.Context(), proxyStateKey{}, st))
	rt.proxy.ServeHTTP(rec, st.in)
}

func stateOf(ctx context.Context) *proxyState {
	st, _ := ctx.Value(proxyStateKey{}).(*proxyState)
	return st
}

func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	st.outURL = *pr.Out.URL
	pr.SetURL(st.upstream.url)
	pr.SetXForwarded() // X-Forwarded-Proto is "https" when pr.In.TLS != nil
	if h.hook != nil {
		h.hook(pr)
	}
}

// proxyError is ReverseProxy's ErrorHandler: the upstream failed before a
// response header was written to the client.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	name := ""
	if st := stateOf(r.Context()); st != nil && st.upstream != nil {
		name = st.upstream.name
	}
	kind := upstreamErrorKind(r.Context(), err)
	if kind == ErrorKindCanceled {
		h.log.Debug("upstream request canceled", zap.String("upstream", name), zap.Error(err))
	} else {
		h.log.Warn("upstream error", zap.String("upstream", name), zap.String("kind", kind), zap.Error(err))
	}
	if isTimeout(err) {
		writeProxyError(w, http.StatusGatewayTimeout)
		return
	}
	writeProxyError(w, http.StatusBadGateway)
}

var proxyErrorBodies = map[int]string{
	http.StatusNotFound:           "404 not found: no route for this host and path",
	http.StatusBadGateway:         "502 bad gateway: the upstream failed",
	http.StatusServiceUnavailable: "503 service unavailable: no healthy upstream",
	http.StatusGatewayTimeout:     "504 gateway timeout: the upstream did not answer in time",
}

func writeProxyError(w http.ResponseWriter, code int) {
	http.Error(w, proxyErrorBodies[code], code)
}

// upstreamErrorKind classifies a failed attempt for metrics, logs and retry.
func upstreamErrorKind(ctx context.Context, err error) string {
	var op *net.OpError
	switch {
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return ErrorKindCanceled
	case errors.As(err, &op) && op.Op == "dial":
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

// retryTransport sends a request to the upstream chosen by ServeHTTP and,
// when connecting to it failed, to another usable upstream of the pool, each
// at most once. It never resends a request that may have reached an
// upstream: only dial errors are retried, and only while the request body is
// unread. It records each attempt's outcome in the pool and the metrics.
type retryTransport struct {
	base    http.RoundTripper
	pool    *pool
	metrics *upstreamMetrics
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateOf(req.Context())
	if st == nil {
		return nil, errors.New("proxy: request without proxy state") // a bug, not a user error
	}
	var body *retryBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &retryBody{rc: req.Body}
		req = req.Clone(req.Context())
		req.Body = body
	}
	for {
		u := st.upstream
		start := time.Now()
		resp, err := t.base.RoundTrip(req)
		if err == nil {
			t.pool.transportOK(u)
			t.metrics.response(u.name, resp.StatusCode, time.Since(start))
			return resp, nil
		}
		kind := upstreamErrorKind(req.Context(), err)
		t.metrics.failure(u.name, kind, time.Since(start))
		if kind != ErrorKindCanceled {
			t.pool.transportFailed(u)
		}
		if kind != ErrorKindDial || req.Context().Err() != nil || body != nil && body.read.Load() {
			return nil, err
		}
		next := t.pool.pick(t.pool.now(), st.tried)
		if next == nil {
			return nil, err
		}
		st.tried = append(st.tried, next)
		next.inflight.Add(1)
		u.inflight.Add(-1)
		st.upstream = next
		req = retarget(req, st, next)
	}
}

// retarget returns a copy of out addressed to u, built from the outbound URL
// as it was before rewrite's SetURL. The Host header is kept.
func retarget(out *http.Request, st *proxyState, u *upstream) *http.Request {
	target := st.outURL
	pr := &httputil.ProxyRequest{In: st.in, Out: &http.Request{URL: &target}}
	pr.SetURL(u.url)
	r := out.Clone(out.Context()) // shares out.Body
	r.URL = pr.Out.URL
	return r
}

// retryBody records whether the transport has read the request body: until
// it has, no byte of the body was sent. Close is held back until then, so an
// unread body stays readable for a retry; ReverseProxy closes the body it
// wrapped when ServeHTTP returns.
type retryBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *retryBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *retryBody) Close() error {
	if b.read.Load() {
		return b.rc.Close()
	}
	return nil
}
