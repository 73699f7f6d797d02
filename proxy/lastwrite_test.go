package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// recordingListener records what is written to each connection it accepts,
// one entry per Write call.
type recordingListener struct {
	net.Listener
	conns chan *recordingConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c}
	l.conns <- rc
	return rc, nil
}

type recordingConn struct {
	net.Conn
	// mu protects writes.
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, slices.Clone(b))
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *recordingConn) Writes() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.writes)
}

// recordTypes returns the TLS record content types in one write.
func recordTypes(b []byte) []byte {
	var types []byte
	for len(b) >= 5 {
		n := 5 + int(b[3])<<8 + int(b[4])
		types = append(types, b[0])
		if n > len(b) {
			break
		}
		b = b[n:]
	}
	return types
}

const (
	recordAlert = 21
	recordData  = 23
)

// A request after which the server closes gets its response and the
// server's close_notify in one write (#13); a keep-alive response is not
// held back.
func TestLastResponseAndCloseNotifyInOneWrite(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: inner, conns: make(chan *recordingConn, 1)}
	certs, err := SelfSignedCerts()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerConfig{TLS: NewTLSConfig(TLSOptions{Certs: certs}), Handler: okHandler()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartOn(rl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(t.Context()) })

	c, err := tls.Dial("tcp", inner.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A safety net against a held keep-alive response, which would hang
	// the test; not a timing assertion.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sc := <-rl.conns
	br := bufio.NewReader(c)
	get := func(header string) {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\n"+header+"\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Fatalf("response %d %q, %v; want 200 \"ok\"", resp.StatusCode, body, err)
		}
	}
	get("")
	before := len(sc.Writes())
	get("Connection: close\r\n")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the last response: %v, want EOF (close_notify)", err)
	}
	writes := sc.Writes()[before:]
	var got [][]byte
	for _, w := range writes {
		got = append(got, recordTypes(w))
	}
	if len(got) != 1 || !bytes.Equal(got[0], []byte{recordData, recordAlert}) {
		t.Errorf("after the last request: writes of record types %v, want one write of [%d %d] (response, close_notify)", got, recordData, recordAlert)
	}
}

// A held connection writes at once what would exceed maxHeld, keeps writing
// through after it, and Close writes what it held in one call.
func TestHeldWrites(t *testing.T) {
	t.Parallel()
	raw, peer := tcpPair(t)
	received := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		received <- b
	}()
	lim := newConnLimiter(Limits{}, nil, zap.NewNop(), func(*limitedConn) {})
	tests := []struct {
		name   string
		writes []int
		want   []int // sizes of the writes that reach the socket before Close
		close  []int // and at Close
	}{
		{"small writes wait for close", []int{100, 200}, nil, []int{300}},
		{"too much goes out at once", []int{100, maxHeld}, []int{100, maxHeld}, nil},
		{"after too much, writes go through", []int{maxHeld + 1, 50}, []int{maxHeld + 1, 50}, nil},
	}
	var all bytes.Buffer
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw.SetWriteDeadline(time.Time{})
			rec := &recordingConn{Conn: &noCloseConn{raw}}
			lc := &limitedConn{Conn: rec, l: lim}
			lc.w.holding.Store(true)
			for i, n := range tt.writes {
				b := bytes.Repeat([]byte{byte('a' + i)}, n)
				all.Write(b)
				if _, err := lc.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			// crypto/tls ends the write deadline after close_notify;
			// Close's write must not fail on it.
			lc.SetWriteDeadline(time.Now())
			if got := sizes(rec.Writes()); !slices.Equal(got, tt.want) {
				t.Errorf("writes before Close: %v, want %v", got, tt.want)
			}
			if err := lc.Close(); err != nil {
				t.Fatal(err)
			}
			if got := sizes(rec.Writes()[len(tt.want):]); !slices.Equal(got, tt.close) {
				t.Errorf("writes at Close: %v, want %v", got, tt.close)
			}
		})
	}
	raw.Close()
	if got := <-received; !bytes.Equal(got, all.Bytes()) {
		t.Errorf("peer received %d bytes, want %d in order", len(got), all.Len())
	}
}

// tcpPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

// noCloseConn keeps the socket open when TestHeldWrites closes a
// limitedConn over it, so that its cases share one peer.
type noCloseConn struct{ net.Conn }

func (noCloseConn) Close() error { return nil }

func sizes(writes [][]byte) []int {
	var n []int
	for _, w := range writes {
		n = append(n, len(w))
	}
	return n
}

// The per-connection context value and the held last writes allocate
// nothing beyond the one context value (#13): counts, not durations.
func TestPerConnAllocs(t *testing.T) {
	raw, peer := tcpPair(t)
	go io.Copy(io.Discard, peer)
	lim := newConnLimiter(Limits{}, nil, zap.NewNop(), func(*limitedConn) {})
	lc := &limitedConn{Conn: noCloseConn{raw}, l: lim, session: &tag{n: 1}}
	tc := tls.Server(lc, &tls.Config{})
	s := &Server{}
	r, err := http.NewRequest("GET", "https://localhost/", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Close = true
	var ctx context.Context
	if n := testing.AllocsPerRun(100, func() { ctx = s.connContext(t.Context(), tc) }); n != 1 {
		t.Errorf("connContext: %v allocations, want 1 (one context value)", n)
	}
	r = r.WithContext(ctx)
	if n := testing.AllocsPerRun(100, func() {
		if ConnSessionFrom(ctx) == nil || clientAddr(ctx) == nil {
			t.Fatal("no session or client address in the connection's context")
		}
	}); n != 0 {
		t.Errorf("ConnSessionFrom and clientAddr: %v allocations, want 0", n)
	}
	msg := make([]byte, 512)
	if n := testing.AllocsPerRun(100, func() {
		holdLastResponse(r, true, true)
		if !lc.w.holding.Load() {
			t.Fatal("a Connection: close response without a body is not held")
		}
		lc.Write(msg)
		lc.SetWriteDeadline(time.Now())
		lc.Write(msg)
		lc.closeWrites()
		lc.w.closed = false
	}); n != 0 {
		t.Errorf("holding and writing the last response: %v allocations, want 0", n)
	}
}
