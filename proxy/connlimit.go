package proxy

import (
	"cmp"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// Reasons a connection is refused at accept, the values of the reason label
// of edgeproxy_connections_refused_total.
const (
	RefusedMaxConnections      = "max_connections"
	RefusedMaxConnectionsPerIP = "max_connections_per_ip"
	RefusedMaxHandshakes       = "max_handshakes"
)

// HandshakeQueueWait is how long a new connection waits for a handshake slot
// while Limits.MaxHandshakes handshakes are in progress. At most
// MaxHandshakes connections wait; the others, and those still waiting after
// HandshakeQueueWait, are refused. A waiting connection costs a file
// descriptor and no goroutine.
const HandshakeQueueWait = time.Second

// refusedLogEvery spaces the warnings about refused connections, which a
// flood would otherwise turn into a log flood.
const refusedLogEvery = 10 * time.Second

// connMetrics are the collectors of the connection caps, part of TLSMetrics.
type connMetrics struct {
	refused   *prometheus.CounterVec
	open      prometheus.Gauge
	refusedBy map[string]prometheus.Counter // reason
}

func newConnMetrics() connMetrics {
	m := connMetrics{
		refused: promreg.CounterVec("edgeproxy_connections_refused_total", "Client connections closed at accept because a limit was reached, by limit.", "reason"),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeproxy_connections_open",
			Help: "Client connections open, handshaking or established.",
		}),
		refusedBy: map[string]prometheus.Counter{},
	}
	for _, r := range []string{RefusedMaxConnections, RefusedMaxConnectionsPerIP, RefusedMaxHandshakes} {
		m.refusedBy[r] = m.refused.WithLabelValues(r)
	}
	return m
}

// connLimiter applies the connection and handshake caps of Limits to the
// connections a tlsListener accepts. Over a connection cap, a connection is
// closed at once, by the accept loop. Under them it counts until it is
// closed (limitedConn), and it starts its handshake if fewer than
// MaxHandshakes are in progress, or else waits in a bounded queue, with no
// goroutine, for the next handshake to end. It is safe for concurrent use.
type connLimiter struct {
	maxConns, maxPerIP, maxHandshakes int
	wait                              time.Duration // HandshakeQueueWait
	metrics                           *TLSMetrics
	log                               *zap.Logger
	// start runs the handshake of an admitted connection on a handshake
	// goroutine (tlsListener.startHandshake), which calls handshakeDone
	// when it ends.
	start func(*limitedConn)
	// deferPerIP, if set, reports the peers (trusted PROXY protocol
	// sources, proxyproto.go) whose connections count against the per-IP
	// cap by the client address of their PROXY header, through claimIP,
	// rather than by their own at accept. Set before the first admit.
	deferPerIP func(netip.Addr) bool
	lastWarn   map[string]*atomic.Int64 // reason: unix nanoseconds of its last warning; read-only

	// mu protects every field below.
	mu         sync.Mutex
	open       int                // connections admitted and not closed
	perIP      map[netip.Addr]int // open, by client address
	handshakes int                // handshakes in progress
	queue      []waiting          // waiting for a handshake slot, oldest first
	timer      *time.Timer        // refuses queue[0] when it has waited too long
	closed     bool
}

type waiting struct {
	c        *limitedConn
	deadline time.Time
}

func newConnLimiter(lim Limits, m *TLSMetrics, log *zap.Logger, start func(*limitedConn)) *connLimiter {
	e := lim.withDefaults()
	if asked := cmp.Or(lim.MaxConnections, DefaultMaxConnections); e.MaxConnections < asked {
		log.Warn("max_connections lowered to fit the file descriptor limit",
			zap.Int("max_connections", asked), zap.Int("effective", e.MaxConnections), zap.Uint64("rlimit_nofile", nofile()))
	}
	return &connLimiter{
		maxConns: e.MaxConnections, maxPerIP: e.MaxConnectionsPerIP, maxHandshakes: e.MaxHandshakes,
		wait: HandshakeQueueWait, metrics: m, log: log, start: start,
		perIP: map[netip.Addr]int{},
		lastWarn: map[string]*atomic.Int64{
			RefusedMaxConnections: {}, RefusedMaxConnectionsPerIP: {}, RefusedMaxHandshakes: {},
		},
	}
}

// admit takes a connection just accepted: it refuses it, starts its
// handshake, or queues it for a handshake slot. It never blocks.
func (l *connLimiter) admit(c net.Conn) {
	ip := remoteIP(c)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.Close()
		return
	}
	counted := l.deferPerIP == nil || !l.deferPerIP(ip)
	reason := ""
	switch {
	case l.open >= l.maxConns:
		reason = RefusedMaxConnections
	case counted && l.perIP[ip] >= l.maxPerIP:
		reason = RefusedMaxConnectionsPerIP
	}
	if reason != "" {
		l.mu.Unlock()
		l.refuse(c, reason)
		return
	}
	l.open++
	if counted {
		l.perIP[ip]++
	}
	lc := &limitedConn{Conn: c, l: l, ip: ip, counted: counted}
	start := false
	switch {
	case l.handshakes < l.maxHandshakes:
		l.handshakes++
		start = true
	case len(l.queue) < l.maxHandshakes:
		l.queue = append(l.queue, waiting{lc, time.Now().Add(l.wait)})
		if len(l.queue) == 1 {
			l.armLocked(l.wait)
		}
	default:
		reason = RefusedMaxHandshakes
	}
	l.mu.Unlock()
	l.metrics.connOpened()
	switch {
	case start:
		l.start(lc)
	case reason != "":
		l.refuse(lc, reason)
	}
}

// handshakeDone hands the slot of a handshake that ended to the oldest
// waiting connection, or frees it.
func (l *connLimiter) handshakeDone() {
	l.mu.Lock()
	if len(l.queue) == 0 || l.closed {
		l.handshakes--
		l.mu.Unlock()
		return
	}
	next := l.queue[0].c
	l.queue[0] = waiting{}
	l.queue = l.queue[1:]
	l.mu.Unlock()
	l.start(next)
}

// armLocked makes the timer call expire after d.
func (l *connLimiter) armLocked(d time.Duration) {
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.expire)
		return
	}
	l.timer.Reset(d)
}

// expire refuses the connections that waited HandshakeQueueWait for a
// handshake slot, and re-arms the timer for the next one.
func (l *connLimiter) expire() {
	now := time.Now()
	l.mu.Lock()
	var late []*limitedConn
	for len(l.queue) > 0 && !now.Before(l.queue[0].deadline) {
		late = append(late, l.queue[0].c)
		l.queue[0] = waiting{}
		l.queue = l.queue[1:]
	}
	if len(l.queue) > 0 && !l.closed {
		l.armLocked(l.queue[0].deadline.Sub(now))
	}
	l.mu.Unlock()
	for _, c := range late {
		l.refuse(c, RefusedMaxHandshakes)
	}
}

// close closes the waiting connections; later ones are closed on admit.
func (l *connLimiter) close() {
	l.mu.Lock()
	l.closed = true
	q := l.queue
	l.queue = nil
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	for _, w := range q {
		w.c.Close()
	}
}

// refuse counts c as refused for reason, then resets it: SetLinger(0) frees
// the socket at once, with no TIME_WAIT.
func (l *connLimiter) refuse(c net.Conn, reason string) {
	l.metrics.connRefused(reason)
	l.warnRefused(reason)
	raw := c
	if lc, ok := c.(*limitedConn); ok {
		raw = lc.Conn
	}
	if tc, ok := raw.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// warnRefused logs that a limit bites, at most once per refusedLogEvery and
// reason.
func (l *connLimiter) warnRefused(reason string) {
	w := l.lastWarn[reason]
	now := time.Now().UnixNano()
	last := w.Load()
	if now-last < int64(refusedLogEvery) || !w.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("connections refused", zap.String("reason", reason),
		zap.Int("max_connections", l.maxConns), zap.Int("max_connections_per_ip", l.maxPerIP), zap.Int("max_handshakes", l.maxHandshakes))
}

// claimIP counts c, admitted uncounted (deferPerIP), against the per-IP
// cap of ip, the client address its PROXY header named. It reports false,
// leaving c uncounted, if ip is at the cap. A connection counted already
// is left as it is.
func (l *connLimiter) claimIP(c *limitedConn, ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.counted {
		return true
	}
	if l.perIP[ip] >= l.maxPerIP {
		return false
	}
	l.perIP[ip]++
	c.ip, c.counted = ip, true
	return true
}

// release gives back the connection slot of a closed connection.
func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	l.open--
	if ip := c.ip; c.counted {
		if l.perIP[ip]--; l.perIP[ip] <= 0 {
			delete(l.perIP, ip)
		}
	}
	l.mu.Unlock()
	l.metrics.connClosed()
}

// remoteIP is the client address connections are counted by; connections
// that are not TCP share the zero address.
func remoteIP(c net.Conn) netip.Addr { return addrIP(c.RemoteAddr()) }

// addrIP is the address a connection from a is counted by.
func addrIP(a net.Addr) netip.Addr {
	if a, ok := a.(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedConn is an admitted connection; closing it gives its slot back,
// once, before the socket is closed (so a peer that sees the close can
// count on the slot being free).
type limitedConn struct {
	net.Conn
	l *connLimiter
	// ip and counted: the address c is counted by in connLimiter.perIP,
	// if counted. l.mu protects them.
	ip      netip.Addr
	counted bool
	// session is what ServerConfig.PerConn returned for c, set by the
	// handshake before the connection is handed to Accept, and read-only
	// after it (ConnSessionFrom).
	session ConnSession
	w       lastWrites // holds the writes after a last response (lastwrite.go)
	once    sync.Once
}

// Close writes what c held (lastwrite.go), gives its slot back and closes
// the socket.
func (c *limitedConn) Close() error {
	werr := c.closeWrites()
	c.once.Do(func() { c.l.release(c) })
	if err := c.Conn.Close(); err != nil {
		return err
	}
	return werr
}

func (m *TLSMetrics) connRefused(reason string) {
	if m == nil {
		return
	}
	m.conns.refusedBy[reason].Inc()
}

func (m *TLSMetrics) connOpened() {
	if m != nil {
		m.conns.open.Inc()
	}
}

func (m *TLSMetrics) connClosed() {
	if m != nil {
		m.conns.open.Dec()
	}
}
