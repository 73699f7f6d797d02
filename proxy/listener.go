package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// acmeTLSProtocol is the ALPN protocol of TLS-ALPN-01 validation
// handshakes (RFC 8737), negotiated only when the config offers it (ACME).
const acmeTLSProtocol = "acme-tls/1"

// DefaultHandshakeTimeout bounds a TLS handshake when none is configured.
const DefaultHandshakeTimeout = 10 * time.Second

// handshakerIdle is how long a handshake goroutine that finished waits for
// the next connection before it ends.
const handshakerIdle = time.Second

// tlsListener accepts TCP connections and completes each TLS handshake on a
// handshake goroutine (one at a time each) before handing the connection to
// the HTTP server. Owning the handshake gives it a timeout of its own, a
// precise duration, and a reason for every failure — none of which
// http.Server exposes.
type tlsListener struct {
	inner   net.Listener
	config  *atomic.Pointer[tls.Config]
	timeout time.Duration
	metrics *TLSMetrics
	log     *zap.Logger
	perConn func(*tls.Config) (*tls.Config, ConnSession)
	limits  *connLimiter
	proxy   *proxyProtocol // PROXY protocol (proxyproto.go); nil: off

	conns chan net.Conn // handshaken connections for Accept
	// work hands an admitted connection to a handshake goroutine waiting
	// after its last handshake (handshaker), whose stack the handshake
	// grew already: a new goroutine starts small and grows its stack by
	// copying, in every handshake, which cost a resumed TLS 1.2 handshake
	// about 3% of its CPU (#13).
	work   chan *limitedConn
	done   chan struct{} // closed by Close
	ctx    context.Context
	cancel context.CancelFunc // aborts handshakes in progress at Close
	wg     sync.WaitGroup

	closeOnce sync.Once
	// errMu protects acceptErr, the error that stopped the accept loop.
	errMu     sync.Mutex
	acceptErr error
}

func newTLSListener(inner net.Listener, config *atomic.Pointer[tls.Config], timeout time.Duration, lim Limits, m *TLSMetrics, log *zap.Logger, perConn func(*tls.Config) (*tls.Config, ConnSession), pp *proxyProtocol) *tlsListener {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	l := &tlsListener{
		inner: inner, config: config, timeout: timeout, metrics: m, log: log, perConn: perConn, proxy: pp,
		conns: make(chan net.Conn),
		work:  make(chan *limitedConn),
		done:  make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.limits = newConnLimiter(lim, m, log, l.startHandshake)
	if pp != nil {
		l.limits.deferPerIP = pp.isTrusted
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or a transient error: back off
				// as net/http does, rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.errMu.Lock()
			l.acceptErr = err
			l.errMu.Unlock()
			l.Close()
			return
		}
		backoff = 0
		l.limits.admit(c) // caps (connlimit.go): refuses, queues, or calls l.handshake
	}
}

// startHandshake runs the handshake of c on a waiting handshake goroutine,
// or on a new one.
func (l *tlsListener) startHandshake(c *limitedConn) {
	select {
	case l.work <- c:
		return
	default:
	}
	l.wg.Add(1)
	go l.handshaker(c)
}

// handshaker runs the handshake of c, then of each connection it is handed
// through l.work, until none came for handshakerIdle or l closed.
func (l *tlsListener) handshaker(c *limitedConn) {
	defer l.wg.Done()
	var idle *time.Timer
	for {
		l.handshake(c)
		if idle == nil {
			idle = time.NewTimer(handshakerIdle)
		} else {
			idle.Reset(handshakerIdle)
		}
		select {
		case c = <-l.work:
		case <-idle.C:
			return
		case <-l.done:
			idle.Stop()
			return
		}
	}
}

func (l *tlsListener) handshake(raw *limitedConn) {
	start := time.Now()
	_ = raw.SetDeadline(start.Add(l.timeout))
	conn, ok := l.readProxyHeader(raw)
	if !ok {
		l.limits.handshakeDone()
		return
	}
	cfg := l.config.Load()
	var value ConnSession
	if l.perConn != nil {
		cfg, value = l.perConn(cfg)
	}
	tc := tls.Server(conn, cfg)
	// Under l.ctx, which Close cancels: that closes the connection, and
	// it also ends what GetCertificate does for the handshake under
	// ClientHelloInfo.Context (an on-demand ACME certificate).
	err := tc.HandshakeContext(l.ctx)
	l.limits.handshakeDone()
	if value != nil {
		value.HandshakeDone(err)
	}
	if err != nil {
		if tc.ConnectionState().NegotiatedProtocol == acmeTLSProtocol {
			raw.Close() // a failed ACME validation is not a client's failure
			return
		}
		// Count before closing, so a client that sees the close can rely
		// on the count.
		if l.ctx.Err() == nil {
			reason := classifyHandshakeError(err)
			l.metrics.handshakeFailed(reason)
			l.log.Debug("tls handshake failed", zap.String("reason", reason), zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
		}
		raw.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == acmeTLSProtocol {
		// A TLS-ALPN-01 validation (RFC 8737): the CA only looks at the
		// certificate. Not a client handshake, and nothing for HTTP.
		tc.Close()
		return
	}
	l.metrics.handshakeDone(cs.Version, cs.DidResume, time.Since(start).Seconds())
	_ = raw.SetDeadline(time.Time{})
	raw.session = value // for ConnSessionFrom; the send below publishes it
	select {
	case l.conns <- tc:
	case <-l.done:
		tc.Close()
	}
}

// classifyHandshakeError names why a server handshake failed. crypto/tls has
// no typed errors for the version and cipher cases, so those are matched on
// their stable text.
func classifyHandshakeError(err error) string {
	var ne net.Error
	var rh tls.RecordHeaderError
	msg := err.Error()
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return ReasonClientClosed
	case errors.As(err, &rh):
		return ReasonBadClientHello
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return ReasonVersion
	case strings.Contains(msg, "no cipher suite supported"), strings.Contains(msg, "no mutually supported"),
		strings.Contains(msg, "no ECDHE curve"):
		return ReasonNoSharedCipher
	case strings.Contains(msg, "client didn't provide a certificate"), strings.Contains(msg, "failed to verify certificate"),
		strings.Contains(msg, "client certificate"):
		return ReasonClientCert
	case strings.Contains(msg, "client hello"), strings.Contains(msg, "ClientHello"), strings.Contains(msg, "unexpected message"):
		return ReasonBadClientHello
	}
	return ReasonOther
}

// Accept returns the next connection whose handshake completed.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.errMu.Lock()
		defer l.errMu.Unlock()
		if l.acceptErr != nil && !errors.Is(l.acceptErr, net.ErrClosed) {
			return nil, l.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting and aborts handshakes in progress; connections
// already handed to Accept are not touched.
func (l *tlsListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
		l.limits.close()
		err = l.inner.Close()
	})
	return err
}

// limitedOf returns the admitted connection under c, or nil.
func limitedOf(c net.Conn) *limitedConn {
	if pc, ok := c.(*proxiedConn); ok {
		c = pc.Conn
	}
	lc, _ := c.(*limitedConn)
	return lc
}

// wait blocks until the accept loop and every handshake goroutine ended.
func (l *tlsListener) wait() { l.wg.Wait() }

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }
