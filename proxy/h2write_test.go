package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// heldRawConn is the server's side of a loopback TCP connection under TLS,
// recording the raw writes crypto/tls makes. While gated, a Write reports on
// entered and waits for release; with fail set, it fails.
type heldRawConn struct {
	net.Conn
	mu       sync.Mutex
	writes   []int // bytes of each raw write
	gated    bool
	entered  chan struct{}
	release  chan struct{}
	deadline chan struct{} // receives when a write deadline is set
	fail     error
}

func (g *heldRawConn) Write(b []byte) (int, error) {
	g.mu.Lock()
	g.writes = append(g.writes, len(b))
	gated, fail := g.gated, g.fail
	g.gated = false // one write is held
	g.mu.Unlock()
	if fail != nil {
		return 0, fail
	}
	if gated {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Conn.Write(b)
}

func (g *heldRawConn) SetWriteDeadline(t time.Time) error {
	select {
	case g.deadline <- struct{}{}:
	default:
	}
	return g.Conn.SetWriteDeadline(t)
}

// gate holds the next raw write until release is closed.
func (g *heldRawConn) gate() {
	g.mu.Lock()
	g.gated, g.writes = true, nil
	g.mu.Unlock()
}

func (g *heldRawConn) rawWrites() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.writes...)
}

// h2WritePair returns an h2WriteConn over a handshaken server-side TLS
// connection on loopback, its raw connection, and the client's end.
func h2WritePair(t *testing.T) (*h2WriteConn, *heldRawConn, *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	certs, err := SelfSignedCerts()
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	g := &heldRawConn{Conn: sc, entered: make(chan struct{}), release: make(chan struct{}), deadline: make(chan struct{}, 1)}
	stc := tls.Server(g, NewTLSConfig(TLSOptions{Certs: certs}))
	ctc := tls.Client(cc, &tls.Config{InsecureSkipVerify: true}) // the test's self-signed certificate
	errc := make(chan error, 1)
	go func() { errc <- stc.Handshake() }()
	if err := ctc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stc.Close(); ctc.Close() })
	return newH2WriteConn(stc), g, ctc
}

func mustWrite(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("client read: %v", err)
	}
	return string(b)
}

// TestH2WriteConnGathersWhileWriting: what is written while a write is
// under way (the frames x/net/http2 flushes one after the other) goes out
// in one raw write after it, in order.
func TestH2WriteConnGathersWhileWriting(t *testing.T) {
	t.Parallel()
	w, g, client := h2WritePair(t)
	g.gate()
	mustWrite(t, w, "HEADERS1 ")
	<-g.entered // the flush goroutine writes it, held by the gate
	mustWrite(t, w, "DATA1 ")
	mustWrite(t, w, "HEADERS2 ")
	mustWrite(t, w, "DATA2")
	close(g.release)
	const want = "HEADERS1 DATA1 HEADERS2 DATA2"
	if got := readN(t, client, len(want)); got != want {
		t.Fatalf("client read %q, want %q", got, want)
	}
	if n := len(g.rawWrites()); n != 2 {
		t.Errorf("%d raw writes (TLS records), want 2: the first, then the three gathered meanwhile", n)
	}
}

// TestH2WriteConnCloseWritesGathered: Close waits for the write under way
// and writes what was gathered before it closes, as a GOAWAY flushed just
// before Close must reach the client.
func TestH2WriteConnCloseWritesGathered(t *testing.T) {
	t.Parallel()
	w, g, client := h2WritePair(t)
	g.gate()
	mustWrite(t, w, "DATA ")
	<-g.entered
	mustWrite(t, w, "GOAWAY")
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case <-g.deadline: // Close bounds the writes: it is under way
	case err := <-closed:
		t.Errorf("Close returned (%v) during a write", err)
		closed <- err
	}
	close(g.release)
	const want = "DATA GOAWAY"
	if got := readN(t, client, len(want)); got != want {
		t.Fatalf("client read %q, want %q", got, want)
	}
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read after the data: %v, want io.EOF (close_notify)", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := w.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestH2WriteConnLargeWriteAndErrors: a Write larger than maxGathered is
// written before it returns (a client that does not read holds the
// server's writer back, as without h2WriteConn), and its error is returned
// to it and to every later Write.
func TestH2WriteConnLargeWriteAndErrors(t *testing.T) {
	t.Parallel()
	w, g, client := h2WritePair(t)
	big := bytes.Repeat([]byte("x"), maxGathered+1)
	if n, err := w.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write(%d bytes) = %d, %v", len(big), n, err)
	}
	if got := readN(t, client, len(big)); got != string(big) {
		t.Fatal("client read other bytes than the large write")
	}

	broken := errors.New("broken pipe")
	g.mu.Lock()
	g.fail = broken
	g.mu.Unlock()
	if _, err := w.Write(big); !errors.Is(err, broken) {
		t.Fatalf("large Write on a failing connection: %v, want its error", err)
	}
	if _, err := w.Write([]byte("small")); err == nil {
		t.Error("Write after a failed write succeeded, want the error")
	}
}

// TestH2WriteConnFlushDoesNotAllocate: gathering a write and flushing it
// from a goroutine of its own allocates nothing once the buffers are
// pooled (a "go c.flush()" allocated a closure each time). The count
// includes the client's read, for which crypto/tls allocates once, and
// under -race the pooled buffer sync.Pool drops. It counts; it does not
// time.
func TestH2WriteConnFlushDoesNotAllocate(t *testing.T) {
	w, _, client := h2WritePair(t)
	msg, buf := []byte("HEADERS DATA"), make([]byte, 12)
	roundTrip := func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip() // warm the pools
	want := 1.0 // the client's read
	if raceEnabled {
		want++
	}
	if n := testing.AllocsPerRun(100, roundTrip); n > want {
		t.Errorf("%.0f allocations per gathered write, its flush and the client's read, want %.0f", n, want)
	}
}
