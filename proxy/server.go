package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Timeouts for client connections. Each field's zero value uses the default
// constant named in its doc.
type Timeouts struct {
	// Handshake bounds the TLS handshake. Default DefaultHandshakeTimeout.
	Handshake time.Duration `yaml:"handshake"`
	// ReadHeader bounds reading a request's headers. Default 10s.
	ReadHeader time.Duration `yaml:"read_header"`
	// Idle bounds a keep-alive connection between requests. Default 120s.
	Idle time.Duration `yaml:"idle"`
	// Write bounds writing a response; zero means no limit, which long
	// downloads and WebSockets need.
	Write time.Duration `yaml:"write"`
}

// Defaults for Timeouts.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Listen is the TCP address to accept TLS on, e.g. "127.0.0.1:8443".
	Listen string
	// TLS is the server TLS configuration (see NewTLSConfig). Required.
	TLS *tls.Config
	// Handler serves requests after TLS. Required.
	Handler http.Handler
	// Timeouts for client connections.
	Timeouts Timeouts
	// Limits bound connections, handshakes, headers and streams.
	Limits Limits
	// Metrics counts handshakes. If nil, nothing is counted.
	Metrics *TLSMetrics
	// PerConn, if set, is called before each handshake with the live TLS
	// configuration; the handshake uses the configuration it returns. The
	// ConnSession it returns (if not nil) is told when the handshake ended
	// and is found by ConnSessionFrom in the contexts of the connection's
	// requests. The session layer installs its hooks here (see
	// NewTLSConfig). If nil, no connection resumes.
	PerConn func(base *tls.Config) (*tls.Config, ConnSession)
	// Logger receives server errors. If nil, logs are discarded.
	Logger *zap.Logger
	// ProxyProtocol reads PROXY protocol headers from trusted load
	// balancers. Its zero value turns it off.
	ProxyProtocol ProxyProtocol
	// ProxyProtocolMetrics counts PROXY headers. If nil, nothing is
	// counted.
	ProxyProtocolMetrics *ProxyProtocolMetrics
}

// Server accepts TLS connections, completes their handshakes and serves
// HTTP/2 and HTTP/1.1 on them. Its handler and TLS configuration can be
// swapped while it runs, without touching established connections.
type Server struct {
	cfg     ServerConfig
	log     *zap.Logger
	tls     atomic.Pointer[tls.Config]
	handler atomic.Pointer[http.Handler]
	http    *http.Server
	h2      *h2Conns       // serves HTTP/2 connections (h2conns.go)
	proxy   *proxyProtocol // nil: PROXY protocol off

	// mu protects ln and serveErr.
	mu       sync.Mutex
	ln       *tlsListener
	serveErr chan error
	stopOnce sync.Once // the listener is closed and waited for once
}

// NewServer validates cfg and returns a Server that is not yet listening.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.TLS == nil {
		return nil, errors.New("proxy: ServerConfig.TLS is required")
	}
	if cfg.Handler == nil {
		return nil, errors.New("proxy: ServerConfig.Handler is required")
	}
	pp, err := cfg.ProxyProtocol.parse()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if pp != nil {
		pp.metrics = cfg.ProxyProtocolMetrics
	}
	s := &Server{cfg: cfg, log: cfg.Logger, proxy: pp}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.tls.Store(cfg.TLS)
	s.handler.Store(&cfg.Handler)
	t := cfg.Timeouts
	readHeader := cmp.Or(t.ReadHeader, DefaultReadHeaderTimeout)
	lim := cfg.Limits.withDefaults()
	s.http = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: readHeader,
		IdleTimeout:       cmp.Or(t.Idle, DefaultIdleTimeout),
		WriteTimeout:      t.Write,
		// HTTP/1.1 answers a larger header block with 431; HTTP/2
		// advertises it as SETTINGS_MAX_HEADER_LIST_SIZE and answers 431.
		MaxHeaderBytes: lim.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: lim.HTTP2MaxConcurrentStreams,
			MaxReadFrameSize:     http2MaxReadFrameSize,
			// A connection that sends no frame for the read-header
			// timeout is pinged and closed if the PING is not answered
			// as fast. This is also the header-block timeout: while a
			// HEADERS frame waits for its CONTINUATION, a PING answer
			// is a protocol error (RFC 9113, Section 6.10), so an
			// unfinished header block is closed within twice this.
			SendPingTimeout: readHeader,
			PingTimeout:     readHeader,
		},
		ErrorLog:    zap.NewStdLog(s.log.Named("http")),
		ConnContext: s.connContext,
		// The handshake itself is done by tlsListener with the live
		// config. A clone: http2.ConfigureServer writes to the config it
		// is given, which would race with handshakes reading ours.
		TLSConfig: cfg.TLS.Clone(),
	}
	if s.h2, err = newH2Conns(s.http, s.connContext); err != nil {
		return nil, fmt.Errorf("proxy: configuring HTTP/2: %w", err)
	}
	return s, nil
}

// connKey is the context key of the connection a request arrived on (the
// *tls.Conn that Accept returned), set by Server.connContext. One value
// serves ConnSessionFrom and the PROXY header's client address
// (clientAddr): a context value per datum cost every connection an
// allocation each, and reading the session cost a lock on Server.mu (#13).
type connKey struct{}

// ConnSessionFrom returns the ConnSession that ServerConfig.PerConn
// returned for the connection a request arrived on, or nil.
func ConnSessionFrom(ctx context.Context) ConnSession {
	c, _ := ctx.Value(connKey{}).(*tls.Conn)
	if c == nil {
		return nil
	}
	if lc := limitedOf(c.NetConn()); lc != nil && lc.session != nil {
		return lc.session
	}
	return nil
}

// clientAddr returns the client address of the connection a request
// arrived on (after its PROXY header, if any), or nil.
func clientAddr(ctx context.Context) net.Addr {
	if c, _ := ctx.Value(connKey{}).(net.Conn); c != nil {
		return c.RemoteAddr()
	}
	return nil
}

func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	wantsClose, noBody := r.Close, r.Body == http.NoBody
	(*s.handler.Load()).ServeHTTP(w, r)
	holdLastResponse(r, wantsClose, noBody) // lastwrite.go
}

// SetHandler swaps the request handler; requests already running finish on
// the old one.
func (s *Server) SetHandler(h http.Handler) { s.handler.Store(&h) }

// SetTLSConfig swaps the TLS configuration for new connections.
func (s *Server) SetTLSConfig(c *tls.Config) { s.tls.Store(c) }

// Start binds the listen address and serves in the background.
func (s *Server) Start() error {
	inner, err := listenTCP(s.cfg.Listen) // listen_linux.go
	if err != nil {
		return fmt.Errorf("proxy: listening on %q: %w", s.cfg.Listen, err)
	}
	return s.StartOn(inner)
}

// StartOn serves on an existing listener, which the Server then owns.
func (s *Server) StartOn(inner net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		inner.Close()
		return errors.New("proxy: server already started")
	}
	s.ln = newTLSListener(inner, &s.tls, s.cfg.Timeouts.Handshake, s.cfg.Limits, s.cfg.Metrics, s.log, s.cfg.PerConn, s.proxy)
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.http.Serve(h2Listener{s.ln, s.h2}) }()
	return nil
}

// Addr returns the address the server listens on, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting, aborts handshakes in progress, and waits for
// in-flight requests to finish until ctx ends; then it closes what is left.
// It may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	err := s.http.Shutdown(ctx) // also sends GOAWAY to HTTP/2 connections
	if err == nil {
		err = s.h2.wait(ctx)
	}
	if err != nil {
		s.http.Close()
		s.h2.closeAll()
	}
	if ln != nil {
		s.stopOnce.Do(func() {
			ln.Close()
			ln.wait()
			if serr := <-s.serveErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
				s.log.Warn("serve ended", zap.Error(serr))
			}
		})
	}
	return err
}

// http2MaxReadFrameSize is the SETTINGS_MAX_FRAME_SIZE the server
// advertises: RFC 9113's initial value. net/http's default is 1 MiB, and the
// HTTP/2 framer keeps a read buffer as large as the largest frame a client
// sent for the life of the connection, so one large DATA frame per
// connection pinned a megabyte of heap per idle connection (#13). Clients
// send bodies in frames of this size anyway.
const http2MaxReadFrameSize = 16 << 10
