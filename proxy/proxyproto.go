package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// PROXY protocol (v1 and v2) on the TLS listener (#14): behind a TCP load
// balancer, the client address reaches r.RemoteAddr (so X-Forwarded-For,
// X-Real-IP and the access log), the per-IP connection cap and the
// handshake failure log.

// Values of ProxyProtocol.Policy.
const (
	ProxyPolicyRequire  = "require"
	ProxyPolicyOptional = "optional"
)

// Values of ProxyProtocol.Untrusted.
const (
	ProxyUntrustedRefuse = "refuse"
	ProxyUntrustedIgnore = "ignore"
)

// Results of reading a connection's PROXY header, the values of the result
// label of edgeproxy_proxy_protocol_total.
const (
	// ProxyResultOK: a trusted source's header named the client.
	ProxyResultOK = "ok"
	// ProxyResultLocal: a trusted source's v2 LOCAL header (the balancer's
	// own connection, e.g. a health check); the peer address is kept.
	ProxyResultLocal = "local"
	// ProxyResultMissing: a trusted source sent no header; the connection
	// is closed under policy require, served as it is under optional.
	ProxyResultMissing = "missing"
	// ProxyResultUntrusted: a header from a source not in Trusted; the
	// connection is closed, or the header dropped (Untrusted: ignore).
	ProxyResultUntrusted = "untrusted"
	// ProxyResultInvalid: a malformed header, or one that names no TCP
	// client; the connection is closed.
	ProxyResultInvalid = "invalid"
	// ProxyResultError: a trusted source's connection timed out or closed
	// before its header was read; it is closed.
	ProxyResultError = "error"
)

// proxyHeaderBuffer buffers the header read; it needs no more than a v1
// line (107 bytes): longer v2 headers are read through it in pieces.
const proxyHeaderBuffer = 256

// ProxyProtocol configures the PROXY protocol (v1 and v2, read alike) on the
// TLS listener. Its zero value turns it off: no header is looked for, and
// one fails the TLS handshake like any other bytes that are not TLS.
//
// Per-IP limits: a connection from a trusted source counts against
// Limits.MaxConnectionsPerIP under the client address of its header (or its
// own, when it sends none), never under the load balancer's address, which
// is bounded by Limits.MaxConnections alone.
type ProxyProtocol struct {
	// Trusted lists the networks of the load balancers that may send a
	// PROXY header, in CIDR notation ("10.0.0.0/8") or as single
	// addresses ("127.0.0.1"). Empty: PROXY protocol is off.
	Trusted []string `yaml:"trusted"`
	// Policy is what a connection from a trusted source opens with:
	// "require" (ProxyPolicyRequire, the default if empty): a PROXY
	// header, or else it is closed; "optional": a header if there is one
	// (the spec's warning applies: a client that can reach the listener
	// directly from a trusted network can forge its address).
	Policy string `yaml:"policy"`
	// Untrusted is what happens to a PROXY header from any other source:
	// "refuse" (ProxyUntrustedRefuse, the default if empty): the
	// connection is closed; "ignore": the header is read and dropped and
	// the connection keeps its own address.
	Untrusted string `yaml:"untrusted"`
}

// Validate checks p without I/O. Errors name the YAML field
// (proxy_protocol.trusted[1]) and quote the bad value.
func (p ProxyProtocol) Validate() error {
	_, err := p.parse()
	return err
}

// proxyProtocol is a ProxyProtocol parsed, as the listener uses it.
type proxyProtocol struct {
	trusted         []netip.Prefix
	optional        bool // Policy optional
	ignoreUntrusted bool // Untrusted ignore
	metrics         *ProxyProtocolMetrics
}

// parse returns p's runtime form, nil when p is off, or every problem.
func (p ProxyProtocol) parse() (*proxyProtocol, error) {
	var errs []error
	pp := &proxyProtocol{}
	for i, s := range p.Trusted {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("proxy_protocol.trusted[%d]: %q: must be a CIDR network or an IP address", i, s))
				continue
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		pp.trusted = append(pp.trusted, unmapPrefix(pfx).Masked())
	}
	switch p.Policy {
	case "", ProxyPolicyRequire:
	case ProxyPolicyOptional:
		pp.optional = true
	default:
		errs = append(errs, fmt.Errorf("proxy_protocol.policy: %q: must be require or optional", p.Policy))
	}
	switch p.Untrusted {
	case "", ProxyUntrustedRefuse:
	case ProxyUntrustedIgnore:
		pp.ignoreUntrusted = true
	default:
		errs = append(errs, fmt.Errorf("proxy_protocol.untrusted: %q: must be refuse or ignore", p.Untrusted))
	}
	if len(p.Trusted) == 0 && (p.Policy != "" || p.Untrusted != "") {
		errs = append(errs, errors.New("proxy_protocol.trusted: required when policy or untrusted is set"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(pp.trusted) == 0 {
		return nil, nil
	}
	return pp, nil
}

// unmapPrefix turns an IPv4-mapped IPv6 network (::ffff:10.0.0.0/104) into
// its IPv4 form, as peer addresses are unmapped (remoteIP).
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// isTrusted reports whether ip may send a PROXY header. A nil p trusts none.
func (p *proxyProtocol) isTrusted(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, pfx := range p.trusted {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// readProxyHeader reads the PROXY header c may open with, under c's
// handshake deadline, in c's handshake goroutine (never in the accept
// loop: a header is only there once the peer sent it), and gives a trusted
// source's connection its per-IP slot under the client's address. It
// returns the connection to run the TLS handshake on, whose RemoteAddr is
// the client's, or false if it closed c. c is a *limitedConn from admit.
func (l *tlsListener) readProxyHeader(c net.Conn) (net.Conn, bool) {
	p := l.proxy
	if p == nil {
		return c, true
	}
	peer := remoteIP(c)
	trusted := p.isTrusted(peer)
	br := bufio.NewReaderSize(c, proxyHeaderBuffer)
	// Close aborts the read, as it aborts handshakes (l.ctx).
	stop := context.AfterFunc(l.ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	var h *proxyproto.Header
	_, peekErr := br.Peek(1)
	err := peekErr
	if err == nil {
		h, err = proxyproto.Read(br)
	}
	stop()
	client := c.RemoteAddr()
	result := ""
	switch {
	case peekErr != nil && !trusted:
		// Nothing came (timeout, close): the handshake meets the same
		// error, and counts it as it always did.
		err = nil
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		// The first bytes are not a PROXY signature (a ClientHello
		// starts with 0x16).
		if trusted {
			result = ProxyResultMissing
			if !p.optional {
				err = errors.New("no proxy protocol header from a trusted source")
				break
			}
		}
		err = nil
	case err != nil && !trusted:
		// A PROXY signature from an untrusted source, cut short or
		// malformed: it cannot be skipped.
		result = ProxyResultUntrusted
	case err != nil:
		result = ProxyResultInvalid
		if r := classifyHandshakeError(err); r == ReasonTimeout || r == ReasonClientClosed {
			result = ProxyResultError
		}
	case !trusted:
		result = ProxyResultUntrusted
		if !p.ignoreUntrusted {
			err = errors.New("proxy protocol header from an untrusted source")
		}
	case h.Command.IsLocal():
		result = ProxyResultLocal
	default:
		src, _, ok := h.TCPAddrs()
		if !ok {
			result, err = ProxyResultInvalid, fmt.Errorf("proxy protocol header for transport %#x, not TCP", byte(h.TransportProtocol))
			break
		}
		result, client = ProxyResultOK, src
	}
	p.metrics.inc(result)
	if err != nil {
		l.log.Debug("proxy protocol refused", zap.String("result", result),
			zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
		c.Close()
		return nil, false
	}
	if lc, ok := c.(*limitedConn); ok && trusted {
		if !l.limits.claimIP(lc, addrIP(client)) {
			l.limits.refuse(lc, RefusedMaxConnectionsPerIP)
			return nil, false
		}
	}
	return &proxiedConn{Conn: c, br: br, remote: client}, true
}

// proxiedConn is a connection whose PROXY header was read: reads return the
// bytes buffered past the header first, and RemoteAddr is the client's.
// Like any net.Conn it is read by one goroutine at a time (the TLS
// connection's).
type proxiedConn struct {
	net.Conn
	br     *bufio.Reader // nil once drained
	remote net.Addr
}

func (c *proxiedConn) Read(b []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(b)
		}
		c.br = nil
	}
	return c.Conn.Read(b)
}

// RemoteAddr returns the client's address: from the PROXY header, or the
// peer's own.
func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// ProxyProtocolMetrics counts PROXY headers read on the TLS listener. A nil
// *ProxyProtocolMetrics counts nothing.
type ProxyProtocolMetrics struct {
	results *prometheus.CounterVec
	by      map[string]prometheus.Counter // result; read-only
}

// NewProxyProtocolMetrics creates the collector and registers it with reg if
// reg is not nil; one registered by an earlier instance is reused.
func NewProxyProtocolMetrics(reg prometheus.Registerer) (*ProxyProtocolMetrics, error) {
	m := &ProxyProtocolMetrics{
		results: promreg.CounterVec("edgeproxy_proxy_protocol_total", "PROXY protocol headers read on the TLS listener, by result (ok, local, missing, untrusted, invalid, error).", "result"),
		by:      map[string]prometheus.Counter{},
	}
	if reg != nil {
		var err error
		if m.results, err = registerOrReuse(reg, m.results); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{ProxyResultOK, ProxyResultLocal, ProxyResultMissing, ProxyResultUntrusted, ProxyResultInvalid, ProxyResultError} {
		m.by[r] = m.results.WithLabelValues(r)
	}
	return m, nil
}

func (m *ProxyProtocolMetrics) inc(result string) {
	if m == nil || result == "" {
		return
	}
	m.by[result].Inc()
}

// Values of RouteConfig.SendProxyProtocol.
const (
	SendProxyV1 = "v1"
	SendProxyV2 = "v2"
)

// writeProxyHeader opens c, a new upstream connection, with a PROXY header
// of version (SendProxyV1, SendProxyV2) naming the client whose request ctx
// belongs to, and the address it connected to. Without a client (a health
// check), or with mismatched address families, the header is LOCAL (v2) or
// UNKNOWN (v1): the upstream then uses the connection's own addresses.
func writeProxyHeader(ctx context.Context, c net.Conn, version string) error {
	v := byte(2)
	if version == SendProxyV1 {
		v = 1
	}
	src := clientAddr(ctx) // server.go
	dst, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	if src == nil || dst == nil {
		src, dst = nil, nil
	}
	_, err := proxyproto.HeaderProxyFromAddrs(v, src, dst).WriteTo(c)
	if err != nil {
		return fmt.Errorf("writing proxy protocol header: %w", err)
	}
	return nil
}
