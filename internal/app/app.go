// Package app assembles an edgeproxy node from its configuration: TLS
// listener, certificates, resumption, routes, admin listener. It owns the
// node's lifecycle: start, reload on SIGHUP, graceful shutdown.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/buildinfo"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/heapfloor"
	"github.com/edgeproxy/edgeproxy/internal/promreg"
	"github.com/edgeproxy/edgeproxy/internal/secretfile"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/proxy/acme"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/stateful"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// Options configures a node.
type Options struct {
	// ConfigPath is the YAML file, read at New and at every Reload. Empty:
	// the configuration comes from Overrides alone.
	ConfigPath string
	// Config, if not nil and ConfigPath is empty, is the starting
	// configuration; it is copied.
	Config *config.Config
	// Overrides is applied to the configuration after each load (the
	// command-line flags).
	Overrides func(*config.Config)
	// BuiltinUpstream starts the demo upstream application in-process and
	// routes every request to it, for the quick start.
	BuiltinUpstream bool
	// SharedKeys, if not nil, is the ticket key ring for mode tickets
	// instead of one built from ticket_keys (in-process fleets: demo, tests).
	SharedKeys *ticketkeys.Holder
	// Logger, if not nil, replaces the logger built from log:.
	Logger *zap.Logger
}

// App is one running node.
type App struct {
	opts Options
	log  *zap.Logger
	reg  *prometheus.Registry

	tlsMetrics      *proxy.TLSMetrics
	resMetrics      *resumption.Metrics
	statefulMetrics *stateful.Metrics

	certs    *proxy.Certs
	acme     *acme.Manager // nil without tls.acme
	sessions *sessions
	server   *proxy.Server
	admin    *proxy.Admin
	builtin  *http.Server
	builtinU string // URL of the built-in upstream
	// adminToken is read from admin_token_file at New; never logged.
	adminToken string

	// mu protects cfg and handler, which Reload replaces.
	mu       sync.Mutex
	cfg      *config.Config
	handler  *proxy.Handler
	draining bool
}

// New loads the configuration and builds the node without listening.
func New(opts Options) (*App, error) {
	a := &App{opts: opts, reg: prometheus.NewRegistry()}
	if opts.BuiltinUpstream {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("starting built-in upstream: %w", err)
		}
		a.builtin = &http.Server{Handler: demoapp.Handler("builtin"), ReadHeaderTimeout: 10 * time.Second}
		a.builtinU = "http://" + ln.Addr().String()
		go a.builtin.Serve(ln)
	}
	cfg, err := a.load()
	if err != nil {
		a.closeBuiltin()
		return nil, err
	}
	a.cfg = cfg
	a.log = opts.Logger
	if a.log == nil {
		if a.log, err = NewLogger(cfg.Log); err != nil {
			a.closeBuiltin()
			return nil, err
		}
	}
	installRedisLogger(a.log)
	if err := a.build(); err != nil {
		a.closeBuiltin()
		return nil, err
	}
	return a, nil
}

// load reads the configuration as Options say and validates it.
func (a *App) load() (*config.Config, error) {
	cfg := &config.Config{}
	if a.opts.ConfigPath != "" {
		c, err := config.LoadUnvalidated(a.opts.ConfigPath)
		if err != nil {
			return nil, err
		}
		cfg = c
	} else if a.opts.Config != nil {
		c := *a.opts.Config
		cfg = &c
	}
	if a.opts.Overrides != nil {
		a.opts.Overrides(cfg)
	}
	if a.builtinU != "" && len(cfg.Routes) == 0 {
		cfg.Routes = []proxy.RouteConfig{{Upstreams: []string{a.builtinU}}}
	}
	if cfg.Listen == "" {
		cfg.Listen = config.DefaultListen
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (a *App) build() error {
	cfg := a.cfg
	var err error
	if a.adminToken, err = readAdminToken(cfg.AdminTokenFile); err != nil {
		return err
	}
	if err := promreg.Register(a.reg, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.NewCollector()); err != nil {
		return fmt.Errorf("registering process metrics: %w", err)
	}
	if a.tlsMetrics, err = proxy.NewTLSMetrics(a.reg); err != nil {
		return err
	}
	if a.resMetrics, err = resumption.NewMetrics(a.reg); err != nil {
		return err
	}
	if a.statefulMetrics, err = stateful.NewMetrics(a.reg); err != nil {
		return err
	}
	if len(cfg.TLS.Certificates) > 0 {
		a.certs, err = proxy.LoadCerts(cfg.TLS.Certificates)
	} else if cfg.TLS.ACME != nil {
		a.certs = proxy.NewManagedOnlyCerts()
	} else {
		a.log.Warn("no certificate configured: using an in-memory self-signed certificate for localhost; clients must skip verification")
		a.certs, err = proxy.SelfSignedCerts()
	}
	if err != nil {
		return err
	}
	if err := a.buildACME(cfg); err != nil {
		return err
	}
	ca, err := loadClientAuth(cfg)
	if err != nil {
		return err
	}
	a.certs.SetClientAuth(ca)
	a.sessions, err = buildSessions(context.Background(), cfg.Resumption, a.opts, a.certs, a.resMetrics, a.statefulMetrics, a.reg, a.log)
	if err != nil {
		return err
	}
	a.handler, err = a.newHandler(cfg)
	if err != nil {
		a.sessions.Close()
		return err
	}
	tlsConf, err := a.tlsConfig(cfg)
	if err != nil {
		a.sessions.Close()
		return err
	}
	ppMetrics, err := proxy.NewProxyProtocolMetrics(a.reg)
	if err != nil {
		a.sessions.Close()
		return err
	}
	sc := proxy.ServerConfig{
		Listen:   cfg.Listen,
		TLS:      tlsConf,
		Handler:  a.handler,
		Timeouts: cfg.Timeouts,
		Limits:   cfg.Limits,
		Metrics:  a.tlsMetrics,
		PerConn:  a.perConn(),
		Logger:   a.log,
	}
	sc.ProxyProtocol, sc.ProxyProtocolMetrics = cfg.ProxyProtocol, ppMetrics
	a.server, err = proxy.NewServer(sc)
	if err != nil {
		a.sessions.Close()
		return err
	}
	return nil
}

// sessionIDHeader returns the header that carries the session identifier
// upstream, or "" when it is off.
func sessionIDHeader(cfg *config.Config) string {
	if h := cfg.Resumption.SessionIDHeader; h != nil {
		return *h
	}
	return config.DefaultSessionIDHeader
}

// perConn gives each handshake its own session hooks (Layer.ConnConfig):
// the one place they are installed. A resumed session then keeps the time
// of its full handshake and, in the stateful modes, requests carry the
// session identifier. In mode off no connection resumes. Either way the
// connection's own configuration gets the client-certificate hook, which
// clones it with the policy of the SNI name (Certs.ConfigureClientAuth).
func (a *App) perConn() func(*tls.Config) (*tls.Config, proxy.ConnSession) {
	l := a.sessions.layer
	return func(base *tls.Config) (*tls.Config, proxy.ConnSession) {
		if l == nil {
			if !a.certs.AsksClientCerts() {
				return base, nil // mode off without client auth: nothing per connection
			}
			c := base.Clone()
			a.certs.ConfigureClientAuth(c)
			return c, nil
		}
		c, cs := l.ConnConfig(base)
		a.certs.ConfigureClientAuth(c)
		return c, cs
	}
}

// loadClientAuth reads the client-certificate CA files of cfg (#14).
func loadClientAuth(cfg *config.Config) (*proxy.ClientAuth, error) {
	return proxy.LoadClientAuth(cfg.TLS.ClientAuth.Policy(), cfg.TLS.Certificates)
}

// requestHook sets the session identifier header on upstream requests. It also
// sets the verified client certificate's identity headers (#14), kept in
// the session of a resumed connection; the handler has already removed
// any client-supplied copy (HandlerConfig.ProxyHeaders).
func requestHook(header string, certHeaders proxy.ClientCertHeaders) func(*httputil.ProxyRequest) {
	return func(pr *httputil.ProxyRequest) {
		certHeaders.Set(pr.Out.Header, pr.In.TLS)
		if header == "" {
			return
		}
		// A client's copy is already gone: the handler strips the
		// session-ID header (HandlerConfig.ProxyHeaders).
		if cs := proxy.ConnSessionFrom(pr.In.Context()); cs != nil {
			if id := cs.SessionID(); id != "" {
				pr.Out.Header.Set(header, id)
			}
		}
	}
}

// revokeHandler serves DELETE /sessions/{id} on the admin listener: the
// session's next connection gets a full handshake (RFC 7486 use case: a
// user logged out). 204: revoked on every node (within the read-through
// bound); 503: the store did not take it, retry; 400: not a session ID.
func (a *App) revokeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := a.sessions.stateful
		if st == nil {
			http.Error(w, "revocation needs a stateful resumption mode (redis, memcached, sticky)", http.StatusNotImplemented)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := st.Revoke(ctx, r.PathValue("id")); err != nil {
			// The store did not take the revocation (#12): the session may
			// still resume on other nodes until a retry succeeds.
			code := http.StatusServiceUnavailable
			if errors.Is(err, stateful.ErrBadSessionID) {
				code = http.StatusBadRequest
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func (a *App) tlsConfig(cfg *config.Config) (*tls.Config, error) {
	v, err := proxy.ParseTLSVersion(cfg.TLS.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("tls.min_version: %w", err)
	}
	return a.withACME(proxy.NewTLSConfig(proxy.TLSOptions{Certs: a.certs, MinVersion: v})), nil
}

func (a *App) newHandler(cfg *config.Config) (*proxy.Handler, error) {
	access := accessLogger(cfg.Log, a.log, nil)
	var covered func(serverName, host string) bool
	if cfg.TLS.StrictSNI() {
		covered = a.certs.Covers
	}
	return proxy.NewHandler(proxy.HandlerConfig{
		CoveredHost: covered,
		Routes:      cfg.Routes,
		Logger:      a.log.Named("proxy"),
		AccessLog:   access,
		Registerer:  a.reg,
		// The session-ID header, under its default and configured
		// names, is the proxy's to set even when the feature is off.
		ProxyHeaders:          append([]string{config.DefaultSessionIDHeader, sessionIDHeader(cfg)}, cfg.TLS.ClientAuth.Headers.Names()...),
		KeepUnderscoreHeaders: cfg.UnderscoresInHeaders,
		RequestHook:           requestHook(sessionIDHeader(cfg), cfg.TLS.ClientAuth.Headers),
		AccessFormat:          proxy.AccessFormat(cfg.Log.AccessFormat),
	})
}

// Start listens and serves.
func (a *App) Start() error {
	a.handler.Start()
	if err := a.server.Start(); err != nil {
		a.handler.Stop()
		return err
	}
	if err := a.startACME(); err != nil {
		a.Shutdown(context.Background())
		return err
	}
	admin, err := proxy.StartAdmin(proxy.AdminConfig{
		Listen:   adminAddr(a.cfg),
		Gatherer: a.reg,
		Ready:    a.ready,
		Pprof:    a.cfg.Pprof,
		Handlers: map[string]http.Handler{"DELETE /sessions/{id}": a.revokeHandler()},
		Token:    a.adminToken,
		Hosts:    a.cfg.AdminHosts,
		Timeouts: a.cfg.AdminTimeouts,
		Logger:   a.log,
	})
	if err != nil {
		a.Shutdown(context.Background())
		return err
	}
	a.admin = admin
	fields := []zap.Field{zap.String("listen", a.server.Addr().String()), zap.String("resumption", a.sessions.mode)}
	if admin != nil {
		fields = append(fields, zap.String("admin", admin.Addr().String()))
		if a.cfg.AdminTokenFile != "" {
			fields = append(fields, zap.String("admin_token_file", a.cfg.AdminTokenFile))
		}
	}
	if a.builtinU != "" {
		fields = append(fields, zap.String("builtin_upstream", a.builtinU))
	}
	a.log.Info("serving", fields...)
	a.log.Info("limits", a.cfg.Limits.Fields()...)
	if pp := a.cfg.ProxyProtocol; len(pp.Trusted) > 0 {
		a.log.Info("proxy protocol", zap.Strings("trusted", pp.Trusted), zap.String("policy", pp.Policy), zap.String("untrusted", pp.Untrusted))
	}
	return nil
}

func (a *App) ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining {
		return errors.New("draining")
	}
	return nil
}

// Addr returns the TLS listener's address.
func (a *App) Addr() net.Addr { return a.server.Addr() }

// AdminAddr returns the admin listener's address, or nil when it is off.
func (a *App) AdminAddr() net.Addr {
	if a.admin == nil {
		return nil
	}
	return a.admin.Addr()
}

// Registry returns the node's metrics registry.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Reload re-reads the configuration, certificates and ticket key files. On
// any error the running configuration stays in force. Established
// connections are not touched. Settings that need a restart (listen
// addresses, resumption mode and key source) are logged and ignored.
func (a *App) Reload() error {
	cfg, err := a.load()
	if err != nil {
		a.log.Error("reload failed; keeping the running configuration", zap.Error(err))
		return err
	}
	handler, err := a.newHandler(cfg)
	if err != nil {
		a.log.Error("reload failed; keeping the running configuration", zap.Error(err))
		return err
	}
	tlsConf, err := a.tlsConfig(cfg)
	if err != nil {
		handler.Stop()
		a.log.Error("reload failed; keeping the running configuration", zap.Error(err))
		return err
	}
	clientAuth, err := loadClientAuth(cfg)
	if err != nil {
		handler.Stop()
		a.log.Error("reload failed; keeping the running configuration", zap.Error(err))
		return err
	}
	// Certificates last among the checks: Reload swaps them only if every
	// file loads, and nothing can fail after it.
	if err := a.certs.Reload(); err != nil {
		handler.Stop()
		a.log.Error("reload failed; keeping the running configuration", zap.Error(err))
		return err
	}
	// New CAs take effect for new handshakes, and change the resumption
	// scope: a session verified under a removed CA gets a full handshake.
	a.certs.SetClientAuth(clientAuth)
	a.mu.Lock()
	old := a.handler
	prev := a.cfg
	a.handler, a.cfg = handler, cfg
	a.mu.Unlock()
	handler.Start()
	a.server.SetHandler(handler)
	a.server.SetTLSConfig(tlsConf)
	old.Stop()
	if cfg.Listen != prev.Listen || adminAddr(cfg) != adminAddr(prev) {
		a.log.Warn("listen addresses change only on restart")
	}
	if cfg.AdminTokenFile != prev.AdminTokenFile || fmt.Sprint(cfg.AdminHosts, cfg.AdminTimeouts) != fmt.Sprint(prev.AdminHosts, prev.AdminTimeouts) {
		a.log.Warn("admin settings change only on restart")
	}
	if fmt.Sprint(cfg.ProxyProtocol) != fmt.Sprint(prev.ProxyProtocol) {
		a.log.Warn("proxy_protocol changes only on restart")
	}
	if cfg.Resumption.Mode != prev.Resumption.Mode || fmt.Sprint(cfg.Resumption.TicketKeys) != fmt.Sprint(prev.Resumption.TicketKeys) {
		a.log.Warn("resumption mode and key source change only on restart")
	}
	// Ticket keys are independent of the rest: a key store that is down
	// keeps the current ring (the source retries by itself) and must not
	// hold back a route or certificate change.
	if err := a.sessions.reload(); err != nil {
		a.log.Warn("reloaded, but ticket keys were not: keeping the current keys", zap.Error(err))
		return fmt.Errorf("ticket keys not reloaded: %w", err)
	}
	a.log.Info("reloaded")
	return nil
}

// readAdminToken reads the admin bearer token from path, with the rule of
// every secret file (internal/secretfile). Empty path: no token.
func readAdminToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	token, err := secretfile.ReadString(path, 4<<10)
	if err != nil {
		return "", fmt.Errorf("admin_token_file: %w", err)
	}
	return token, nil
}

// adminAddr is the admin listener address a configuration asks for.
func adminAddr(c *config.Config) string {
	if c.Admin == nil {
		return proxy.DefaultAdminListen
	}
	return *c.Admin
}

// Shutdown stops accepting, drains in-flight requests until ctx ends, and
// releases everything.
func (a *App) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	a.draining = true
	h := a.handler
	a.mu.Unlock()
	err := a.server.Shutdown(ctx)
	h.Stop()
	a.admin.Shutdown(ctx)
	a.stopACME()
	a.sessions.Close()
	a.closeBuiltin()
	a.log.Info("stopped")
	_ = a.log.Sync()
	return err
}

func (a *App) closeBuiltin() {
	if a.builtin != nil {
		a.builtin.Close()
	}
}

// Run starts a node and serves until ctx ends (SIGINT, SIGTERM), reloading
// on SIGHUP.
func Run(ctx context.Context, opts Options, stdout io.Writer) error {
	a, err := New(opts)
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	// The heap floor is process-wide, so Run (the serve command) sets it,
	// not New: tests run several nodes in one process.
	floor := startHeapFloor(a.log, a.config().GC)
	defer floor.Stop()
	fmt.Fprintf(stdout, "edgeproxy serving https://%s (resumption: %s)\n", a.Addr(), a.sessions.mode)
	if ad := a.AdminAddr(); ad != nil {
		fmt.Fprintf(stdout, "admin: http://%s/metrics\n", ad)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			a.log.Info("SIGHUP: reloading")
			if a.Reload() == nil {
				floor.Set(a.config().GC.Floor())
			}
		case <-ctx.Done():
			timeout := a.cfg.ShutdownTimeout
			if timeout == 0 {
				timeout = config.DefaultShutdownTimeout
			}
			a.log.Info("shutting down", zap.Duration("drain_timeout", timeout))
			sctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			return a.Shutdown(sctx)
		}
	}
}

// config is the configuration in use (Reload replaces it).
func (a *App) config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// startHeapFloor starts the GC heap floor c asks for, unless the GOGC
// environment variable is set: then the operator has chosen the pacing.
func startHeapFloor(log *zap.Logger, c heapfloor.Config) *heapfloor.Floor {
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Info("gc heap floor off: GOGC is set", zap.String("gogc", v))
		return nil
	}
	if c.Floor() > 0 {
		log.Info("gc heap floor", zap.Int64("min_heap_bytes", c.Floor()))
	}
	return heapfloor.Start(c.Floor())
}
