package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// Tests of the connection caps (issue #11). Clients bind to 127.0.0.x
// source addresses, which Linux loopback accepts, to stand for several
// client IPs.

// dialFrom opens a TCP connection from the loopback address src to addr.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	c, err := tryDialFrom(t, src, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryDialFrom is dialFrom returning the error: the server may reset a
// refused connection before connect returns.
func tryDialFrom(t *testing.T, src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// handshakeFrom completes a TLS handshake from src; the error says why it
// failed (a refused connection is closed by the server before it answers).
func handshakeFrom(t *testing.T, src, addr string) (*tls.Conn, net.Conn, error) {
	t.Helper()
	raw, err := tryDialFrom(t, src, addr)
	if err != nil {
		return nil, nil, err
	}
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	err = tc.Handshake()
	raw.SetDeadline(time.Time{})
	return tc, raw, err
}

// mustHandshake is handshakeFrom that requires success.
func mustHandshake(t *testing.T, src, addr string) (*tls.Conn, net.Conn) {
	t.Helper()
	tc, raw, err := handshakeFrom(t, src, addr)
	if err != nil {
		t.Fatalf("handshake from %s: %v", src, err)
	}
	return tc, raw
}

// mustBeRefused requires that a handshake from src fails: the server closed
// the connection instead of answering.
func mustBeRefused(t *testing.T, src, addr string) {
	t.Helper()
	if _, _, err := handshakeFrom(t, src, addr); err == nil {
		t.Fatalf("a connection from %s over the cap completed its handshake", src)
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a connection from %s over the cap was left open: %v", src, err)
	}
}

// closeByServer asks the server to close tc (a request with Connection:
// close) and waits for the TCP close under it, which the server sends only
// after it gave the connection's slot back.
func closeByServer(t *testing.T, tc *tls.Conn, raw net.Conn) {
	t.Helper()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	io.Copy(io.Discard, tc)
	if _, err := io.Copy(io.Discard, raw); err != nil {
		t.Fatalf("waiting for the server's close: %v", err)
	}
}

// keepAliveClient keeps one connection from src and requires that each GET
// through it gets 200.
type keepAliveClient struct {
	t      *testing.T
	client *http.Client
	url    string
}

func newKeepAliveClient(t *testing.T, src, addr string) *keepAliveClient {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr := &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		MaxConnsPerHost: 1,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &keepAliveClient{t: t, client: &http.Client{Transport: tr, Timeout: 20 * time.Second}, url: "https://" + addr + "/"}
}

func (k *keepAliveClient) get() {
	k.t.Helper()
	resp, err := k.client.Get(k.url)
	if err != nil {
		k.t.Fatalf("GET from the established client: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		k.t.Fatalf("GET from the established client: %s %q", resp.Status, body)
	}
}

// wantRefused requires the series edgeproxy_connections_refused_total{reason}
// to be want.
func wantRefused(t *testing.T, m *TLSMetrics, reason string, want float64) {
	t.Helper()
	if got := testutil.ToFloat64(m.conns.refused.WithLabelValues(reason)); got != want {
		t.Fatalf("edgeproxy_connections_refused_total{reason=%q} = %v, want %v", reason, got, want)
	}
}

// startLimited runs a Server with lim and returns its metrics and address.
// The handshake timeout is long: a connection that was not refused stays
// open, so a test cannot mistake a timeout for a refusal.
func startLimited(t *testing.T, lim Limits) (*TLSMetrics, string) {
	m := mustTLSMetrics(t, prometheus.NewRegistry())
	s := startServer(t, ServerConfig{Handler: okHandler(), Metrics: m, Limits: lim, Timeouts: Timeouts{Handshake: time.Minute}})
	return m, s.Addr().String()
}

func TestMaxConnectionsRefusesOverCap(t *testing.T) {
	t.Parallel()
	m, addr := startLimited(t, Limits{MaxConnections: 3})
	client := newKeepAliveClient(t, "127.0.0.1", addr)
	client.get()
	held, heldRaw := mustHandshake(t, "127.0.0.1", addr)
	mustHandshake(t, "127.0.0.1", addr)

	mustBeRefused(t, "127.0.0.1", addr)
	wantRefused(t, m, RefusedMaxConnections, 1)
	if got := testutil.ToFloat64(m.conns.open); got != 3 {
		t.Fatalf("edgeproxy_connections_open = %v, want 3", got)
	}
	client.get()

	closeByServer(t, held, heldRaw)
	mustHandshake(t, "127.0.0.1", addr)
	client.get()
	wantRefused(t, m, RefusedMaxConnections, 1)
}

func TestMaxConnectionsPerIP(t *testing.T) {
	t.Parallel()
	m, addr := startLimited(t, Limits{MaxConnectionsPerIP: 2})
	held, heldRaw := mustHandshake(t, "127.0.0.2", addr)
	mustHandshake(t, "127.0.0.2", addr)

	mustBeRefused(t, "127.0.0.2", addr)
	wantRefused(t, m, RefusedMaxConnectionsPerIP, 1)
	other := newKeepAliveClient(t, "127.0.0.3", addr)
	other.get()
	other.get()

	closeByServer(t, held, heldRaw)
	mustHandshake(t, "127.0.0.2", addr)
	wantRefused(t, m, RefusedMaxConnectionsPerIP, 1)
}

func TestMaxHandshakes(t *testing.T) {
	t.Parallel()
	m, addr := startLimited(t, Limits{MaxHandshakes: 2})
	client := newKeepAliveClient(t, "127.0.0.1", addr)
	client.get()
	// Two connections that send nothing hold both handshake slots.
	silent := []net.Conn{dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)}

	// A new handshake waits HandshakeQueueWait for a slot, gets none, and
	// is refused; the established client is served meanwhile.
	mustBeRefused(t, "127.0.0.3", addr)
	wantRefused(t, m, RefusedMaxHandshakes, 1)
	client.get()

	// The load drops: one silent client gives up. Its half-close ends the
	// server's handshake, which frees the slot before the server closes the
	// connection.
	silent[0].(*net.TCPConn).CloseWrite()
	silent[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, silent[0]); err != nil {
		t.Fatalf("waiting for the server to close a silent connection: %v", err)
	}
	mustHandshake(t, "127.0.0.3", addr)
	client.get()
}

// pipeConn is one end of a net.Pipe whose other end the test keeps.
func pipeConn(t *testing.T) (server, client net.Conn) {
	server, client = net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// mustBeClosed requires that the server closed the pipe end behind c.
func mustBeClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read from a refused connection: %v, want EOF", err)
	}
}

// TestHandshakeQueue drives the connLimiter alone: a connection over
// MaxHandshakes waits, without a goroutine, and takes the slot of the next
// handshake to end; one over the queue, or waiting too long, is refused.
func TestHandshakeQueue(t *testing.T) {
	t.Parallel()
	m := mustTLSMetrics(t, prometheus.NewRegistry())
	started := make(chan *limitedConn, 10)
	l := newConnLimiter(Limits{MaxHandshakes: 1}, m, zap.NewNop(), func(c *limitedConn) { started <- c })
	l.wait = time.Hour
	// next returns the raw connection whose handshake started, if any.
	next := func() net.Conn {
		select {
		case c := <-started:
			return c.Conn
		default:
			return nil
		}
	}
	a, _ := pipeConn(t)
	b, _ := pipeConn(t)
	c, cPeer := pipeConn(t)
	l.admit(a)
	if got := next(); got != a {
		t.Fatalf("first connection: started %v, want it started", got)
	}
	l.admit(b) // waits: the one slot is taken
	if got := next(); got != nil {
		t.Fatal("a second handshake started beyond MaxHandshakes: 1")
	}
	l.admit(c) // the queue (MaxHandshakes long) is full: refused
	mustBeClosed(t, cPeer)
	wantRefused(t, m, RefusedMaxHandshakes, 1)
	l.handshakeDone() // a's handshake ends: b takes its slot
	if got := next(); got != b {
		t.Fatalf("after a handshake ended: started %v, want the waiting connection", got)
	}

	// Waiting too long: d queues behind b and is refused when its wait
	// is over.
	l.mu.Lock()
	l.wait = 0
	l.mu.Unlock()
	d, dPeer := pipeConn(t)
	l.admit(d)
	mustBeClosed(t, dPeer)
	wantRefused(t, m, RefusedMaxHandshakes, 2)
	if got := testutil.ToFloat64(m.conns.open); got != 2 {
		t.Fatalf("open = %v, want 2 (a and b)", got)
	}
}

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	if err := (Limits{}).Validate(); err != nil {
		t.Fatalf("zero Limits: %v", err)
	}
	err := Limits{MaxConnections: -1, MaxHandshakes: -2}.Validate()
	for _, want := range []string{"limits.max_connections: must not be negative, got -1", "limits.max_handshakes: must not be negative, got -2"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "per_ip") {
		t.Errorf("Validate() = %v, names a field that is valid", err)
	}
}

func TestFDCap(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{
		{0, int(^uint(0) >> 1)},
		{1 << 40, int(^uint(0) >> 1)},
		{20000, (20000 - fdReserve) / 2},
		{1024, (1024 - fdReserve) / 2},
		{10, 1},
	} {
		if got := fdCap(tt.nofile); got != tt.want {
			t.Errorf("fdCap(%d) = %d, want %d", tt.nofile, got, tt.want)
		}
	}
	if got := (Limits{MaxConnections: 5}).withDefaults().MaxConnections; got != 5 {
		t.Errorf("MaxConnections 5 became %d", got)
	}
}
