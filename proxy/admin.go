package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// DefaultAdminListen is the admin listener's address when none is given.
const DefaultAdminListen = "127.0.0.1:9090"

// AdminConfig configures the admin HTTP listener.
type AdminConfig struct {
	// Listen is the address, e.g. DefaultAdminListen. Empty turns it off.
	Listen string
	// Gatherer serves /metrics. If nil, /metrics is not served.
	Gatherer prometheus.Gatherer
	// Ready reports whether the node should receive traffic; a non-nil
	// error makes /readyz answer 503 with its text. If nil, always ready.
	Ready func() error
	// Pprof mounts net/http/pprof under /debug/pprof/.
	Pprof bool
	// Handlers adds routes, keyed by http.ServeMux pattern, such as
	// "DELETE /sessions/{id}".
	Handlers map[string]http.Handler
	// Logger receives errors. If nil, logs are discarded.
	Logger *zap.Logger
}

// Admin is the plain-HTTP admin listener: /metrics, /healthz, /readyz.
// Keep it on loopback or a private interface: it has no authentication.
type Admin struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// AdminHandler returns the admin routes.
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
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	for pattern, h := range cfg.Handlers {
		mux.Handle(pattern, h)
	}
	return mux
}

// StartAdmin binds cfg.Listen and serves the admin routes. It returns nil,
// nil when cfg.Listen is empty.
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
	a := &Admin{
		srv: &http.Server{
			Handler:           AdminHandler(cfg),
			ReadHeaderTimeout: 5 * time.Second,
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
	return a, nil
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
