package proxy

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// DefaultAdminListen is the admin listener's address when none is given.
const DefaultAdminListen = "127.0.0.1:9090"

// AdminTimeouts bound the admin listener's connections (issue #11: without
// them a slow client holds a connection forever). Each field's zero value
// uses the default constant named in its doc.
type AdminTimeouts struct {
	// ReadHeader bounds reading a request's headers. Default
	// DefaultAdminReadHeaderTimeout.
	ReadHeader time.Duration `yaml:"read_header"`
	// Read bounds reading a whole request. Default DefaultAdminReadTimeout.
	Read time.Duration `yaml:"read"`
	// Write bounds writing a response. Default DefaultAdminWriteTimeout.
	// /debug/pprof/profile and /debug/pprof/trace?seconds=N extend their
	// own deadline by N seconds, so long profiles still work.
	Write time.Duration `yaml:"write"`
	// Idle bounds a keep-alive connection between requests. Default
	// DefaultAdminIdleTimeout.
	Idle time.Duration `yaml:"idle"`
}

// Defaults for AdminTimeouts.
const (
	DefaultAdminReadHeaderTimeout = 5 * time.Second
	DefaultAdminReadTimeout       = 10 * time.Second
	DefaultAdminWriteTimeout      = 30 * time.Second
	DefaultAdminIdleTimeout       = 60 * time.Second
)

// AdminConfig configures the admin HTTP listener.
type AdminConfig struct {
	// Listen is the address, e.g. DefaultAdminListen. Empty turns it off.
	// An address beyond loopback is served, with a warning at start.
	Listen string
	// Gatherer serves /metrics. If nil, /metrics is not served.
	Gatherer prometheus.Gatherer
	// Ready reports whether the node should receive traffic; a non-nil
	// error makes /readyz answer 503 with its text. If nil, always ready.
	Ready func() error
	// Pprof mounts net/http/pprof under /debug/pprof/.
	Pprof bool
	// Handlers adds routes, keyed by http.ServeMux pattern, such as
	// "DELETE /sessions/{id}". They require Token.
	Handlers map[string]http.Handler
	// Token, if not empty, is the bearer token ("Authorization: Bearer
	// <token>") that /debug/pprof/ and the routes in Handlers require;
	// a request without it, or with another, gets 401. /metrics, /healthz
	// and /readyz stay open. If empty, no route asks for a credential.
	Token string
	// Hosts are the names, besides IP literals and "localhost", that a
	// request's Host header may carry; any other gets 421, so a web page
	// that rebinds its own DNS name to the admin address cannot read it.
	// Names match case-insensitively, with or without a port. A request
	// without a Host (HTTP/1.0 health checks) is served. If empty, only
	// IP literals and localhost are accepted.
	Hosts []string
	// Timeouts bound the listener's connections.
	Timeouts AdminTimeouts
	// Logger receives errors and the start-up warning. If nil, logs are
	// discarded.
	Logger *zap.Logger
}

// Admin is the plain-HTTP admin listener: /metrics, /healthz, /readyz, and
// optionally pprof and the routes in AdminConfig.Handlers. Keep it on
// loopback or a private interface; set AdminConfig.Token before exposing
// its mutating routes or pprof to anyone else.
type Admin struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// AdminHandler returns the admin routes behind the Host check, with the
// token check on pprof and cfg.Handlers.
func AdminHandler(cfg AdminConfig) http.Handler {
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	protect := func(h http.Handler) http.Handler { return requireToken(cfg.Token, h) }
	if cfg.Pprof {
		mux.Handle("/debug/pprof/", protect(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", protect(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", protect(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", protect(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", protect(http.HandlerFunc(pprof.Trace)))
	}
	for pattern, h := range cfg.Handlers {
		mux.Handle(pattern, protect(h))
	}
	return checkHost(cfg.Hosts, mux)
}

// requireToken answers 401 unless the request carries token as a bearer
// credential. An empty token requires nothing. The handler's
// ResponseWriter is passed on unwrapped: pprof extends its write deadline
// through http.ResponseController.
func requireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgeproxy admin"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearer returns the credential of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive (RFC 9110 §11.1).
func bearer(auth string) (string, bool) {
	scheme, cred, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

// checkHost answers 421 to a request whose Host is neither empty, an IP
// literal, localhost, nor one of hosts.
func checkHost(hosts []string, h http.Handler) http.Handler {
	allowed := map[string]bool{"localhost": true}
	for _, n := range hosts {
		allowed[normalHost(n)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "" {
			name := r.Host
			if host, _, err := net.SplitHostPort(name); err == nil {
				name = host
			}
			name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
			if _, err := netip.ParseAddr(name); err != nil && !allowed[normalHost(name)] {
				http.Error(w, "unknown host: add it to admin_hosts", http.StatusMisdirectedRequest)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func normalHost(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// StartAdmin binds cfg.Listen and serves the admin routes. It returns nil,
// nil when cfg.Listen is empty. It logs a warning when the listener is not
// on a loopback address.
func StartAdmin(cfg AdminConfig) (*Admin, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: admin listening on %q: %w", cfg.Listen, err)
	}
	return serveAdmin(cfg, ln, log), nil
}

// serveAdmin serves the admin routes on ln, which it then owns.
func serveAdmin(cfg AdminConfig, ln net.Listener, log *zap.Logger) *Admin {
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("admin listener is not on loopback: keep it off the internet",
			zap.String("admin", ln.Addr().String()), zap.Bool("token", cfg.Token != ""), zap.Bool("pprof", cfg.Pprof))
	}
	t := cfg.Timeouts
	a := &Admin{
		srv: &http.Server{
			Handler:           AdminHandler(cfg),
			ReadHeaderTimeout: cmp.Or(t.ReadHeader, DefaultAdminReadHeaderTimeout),
			ReadTimeout:       cmp.Or(t.Read, DefaultAdminReadTimeout),
			WriteTimeout:      cmp.Or(t.Write, DefaultAdminWriteTimeout),
			IdleTimeout:       cmp.Or(t.Idle, DefaultAdminIdleTimeout),
			ErrorLog:          zap.NewStdLog(log.Named("admin")),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server ended", zap.Error(err))
		}
	}()
	return a
}

// Addr returns the admin listener's address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// Shutdown stops the admin listener. It is safe on a nil *Admin.
func (a *Admin) Shutdown(ctx context.Context) error {
	if a == nil {
		return nil
	}
	err := a.srv.Shutdown(ctx)
	<-a.done
	return err
}
