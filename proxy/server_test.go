package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// startServer runs a Server on a free loopback port until the test ends.
func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	if cfg.TLS == nil {
		certs, err := SelfSignedCerts()
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = NewTLSConfig(TLSOptions{Certs: certs})
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
}

func TestHandshakeTimeoutIsCounted(t *testing.T) {
	m := mustTLSMetrics(t, prometheus.NewRegistry())
	s := startServer(t, ServerConfig{Handler: okHandler(), Metrics: m, Timeouts: Timeouts{Handshake: 50 * time.Millisecond}})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Send nothing: the server gives up after the handshake timeout, counts
	// it, then closes, which ends this read.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("server sent data to a silent client")
	}
	if got := testutil.ToFloat64(m.errs[ReasonTimeout]); got != 1 {
		t.Fatalf("timeout failures = %v, want 1", got)
	}
}

func TestClassifyHandshakeError(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{io.EOF, ReasonClientClosed},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), ReasonClientClosed},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, ReasonTimeout},
		{tls.RecordHeaderError{Msg: "tls: first record does not look like a TLS handshake"}, ReasonBadClientHello},
		{errors.New("tls: client offered only unsupported versions: [302 301]"), ReasonVersion},
		{errors.New("tls: no cipher suite supported by both client and server"), ReasonNoSharedCipher},
		{errors.New("tls: something else"), ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := classifyHandshakeError(tt.err); got != tt.want {
				t.Fatalf("classify(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

func TestNoSharedCipherIsCounted(t *testing.T) {
	m := mustTLSMetrics(t, prometheus.NewRegistry())
	s := startServer(t, ServerConfig{Handler: okHandler(), Metrics: m})
	err := testserver.Handshake(t, s.Addr().String(), &tls.Config{
		InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA},
	})
	if err == nil {
		t.Fatal("handshake with no shared cipher succeeded")
	}
	if got := testutil.ToFloat64(m.errs[ReasonNoSharedCipher]); got != 1 {
		t.Fatalf("no_shared_cipher = %v, want 1", got)
	}
}

// tag is a ConnSession whose identifier is a connection count.
type tag struct{ n int }

func (t *tag) SessionID() string   { return fmt.Sprint(t.n) }
func (t *tag) HandshakeDone(error) {}

func TestPerConnValueReachesRequests(t *testing.T) {
	var calls atomic.Int32
	s := startServer(t, ServerConfig{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := ConnSessionFrom(r.Context())
			if v == nil {
				http.Error(w, "no value", 500)
				return
			}
			fmt.Fprint(w, v.SessionID())
		}),
		PerConn: func(base *tls.Config) (*tls.Config, ConnSession) {
			return base, &tag{n: int(calls.Add(1))}
		},
	})
	for want := 1; want <= 2; want++ {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
		resp, err := c.Get("https://" + s.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != fmt.Sprint(want) {
			t.Fatalf("connection %d: handler saw %q", want, body)
		}
	}
}

// drainCase is a request held in its handler while Shutdown runs, for
// TestShutdownDrainsInFlightRequests and its HTTP/2 twin in h2conns_test.go.
type drainCase struct {
	s           *Server
	entered     chan struct{}
	release     func()
	handlerDone atomic.Bool
	done        chan drainResult    // the held request's outcome
	shutdown    chan shutdownResult // Shutdown's outcome
}

type drainResult struct {
	n   int
	err error
}

type shutdownResult struct {
	err          error
	afterHandler bool // the held handler had finished when Shutdown returned
}

const drainBodySize = 256 << 10

// startDrainCase starts a Server whose /slow handler blocks until released,
// then answers drainBodySize bytes; other paths answer "ok".
func startDrainCase(t *testing.T) *drainCase {
	d := &drainCase{entered: make(chan struct{}), done: make(chan drainResult, 1), shutdown: make(chan shutdownResult, 1)}
	release := make(chan struct{})
	d.release = sync.OnceFunc(func() { close(release) })
	t.Cleanup(d.release) // a failed test must not leave the handler blocked
	d.s = startServer(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "ok")
			return
		}
		close(d.entered)
		<-release
		w.Header().Set("Content-Length", fmt.Sprint(drainBodySize))
		w.Write(bytes.Repeat([]byte("x"), drainBodySize))
		d.handlerDone.Store(true)
	})})
	return d
}

// hold sends GET /slow with c, waits until its handler runs, and starts
// Shutdown.
func (d *drainCase) hold(c *http.Client, wantProto int) {
	go func() {
		resp, err := c.Get("https://" + d.s.Addr().String() + "/slow")
		if err != nil {
			d.done <- drainResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.ProtoMajor != wantProto {
			err = fmt.Errorf("served over %s, want HTTP/%d", resp.Proto, wantProto)
		}
		d.done <- drainResult{len(b), err}
	}()
	<-d.entered
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := d.s.Shutdown(ctx)
		d.shutdown <- shutdownResult{err, d.handlerDone.Load()}
	}()
}

// finish checks that neither Shutdown nor the request ended yet, releases
// the handler, and checks that the request got its whole response and that
// Shutdown returned after the handler finished, with the listener closed.
func (d *drainCase) finish(t *testing.T) {
	t.Helper()
	select {
	case r := <-d.shutdown:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", r.err)
	case r := <-d.done:
		t.Fatalf("request ended (%+v) before it was released", r)
	default:
	}
	d.release()
	if r := <-d.done; r.err != nil || r.n != drainBodySize {
		t.Fatalf("in-flight request: %d bytes, %v; want all %d", r.n, r.err, drainBodySize)
	}
	r := <-d.shutdown
	if r.err != nil {
		t.Fatalf("Shutdown = %v", r.err)
	}
	if !r.afterHandler {
		t.Fatal("Shutdown returned before the in-flight handler finished")
	}
	if c, err := net.Dial("tcp", d.s.Addr().String()); err == nil {
		c.Close()
		t.Fatal("listener still accepts after Shutdown")
	}
}

// TestShutdownDrainsInFlightRequests: a request blocked in its handler
// keeps Shutdown from returning until it is released, and then gets its
// whole response. The handler is released only once Shutdown is known to
// be in its drain loop: its hooks ran (listener closed) and it closed an
// idle keep-alive connection. Shutdown must then return after the handler
// finished, never before.
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	d := startDrainCase(t)
	addr := d.s.Addr().String()
	hooked := make(chan struct{})
	d.s.http.RegisterOnShutdown(sync.OnceFunc(func() { close(hooked) })) // cleanup shuts down again

	// An idle keep-alive connection: Shutdown closes it from its drain loop.
	idle, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	idleClosed := make(chan error, 1)
	go func() {
		idle.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := br.ReadByte()
		idleClosed <- err
	}()

	d.hold(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}, 1)
	// Shutdown closes idle connections from its drain loop: once this one
	// is closed, Shutdown is waiting for the request in flight.
	select {
	case <-hooked:
	case r := <-d.shutdown:
		t.Fatalf("Shutdown returned (%v) without running its drain", r.err)
	}
	select {
	case err := <-idleClosed:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("idle keep-alive connection: %v, want EOF from Shutdown", err)
		}
	case r := <-d.shutdown:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", r.err)
	}
	d.finish(t)
}

// handshakeErrors reads the series edgeproxy_tls_handshake_errors_total
// with reason from reg, failing the test when it is missing.
func handshakeErrors(t *testing.T, reg prometheus.Gatherer, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgeproxy_tls_handshake_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series edgeproxy_tls_handshake_errors_total{reason=%q}", reason)
	return 0
}

// TestOldTLSRefusedByDefault is a regression guard: a client that offers
// only TLS 1.0 or 1.1 fails against the default configuration, and the
// failure is counted as protocol_version.
func TestOldTLSRefusedByDefault(t *testing.T) {
	t.Parallel()
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			s := startServer(t, ServerConfig{Handler: okHandler(), Metrics: mustTLSMetrics(t, reg)})
			err := testserver.Handshake(t, s.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
			if err == nil {
				t.Fatalf("a %s-only client completed a handshake", tls.VersionName(v))
			}
			if got := handshakeErrors(t, reg, ReasonVersion); got != 1 {
				t.Fatalf("edgeproxy_tls_handshake_errors_total{reason=%q} = %v, want 1 (client error: %v)", ReasonVersion, got, err)
			}
		})
	}
}

// writeCert writes a self-signed certificate for name to cert/key files.
func writeCert(t *testing.T, certFile, keyFile, name string, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

func TestCertsBySNIAndReload(t *testing.T) {
	dir := t.TempDir()
	a, ak := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	b, bk := filepath.Join(dir, "b.pem"), filepath.Join(dir, "b.key")
	writeCert(t, a, ak, "a.test", 1)
	writeCert(t, b, bk, "*.b.test", 2)
	certs, err := LoadCerts([]CertConfig{{Cert: a, Key: ak}, {Cert: b, Key: bk}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, ServerConfig{Handler: okHandler(), TLS: NewTLSConfig(TLSOptions{Certs: certs})})
	serial := func(sni string) int64 {
		c, err := tls.Dial("tcp", s.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: sni})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	for sni, want := range map[string]int64{"a.test": 1, "x.b.test": 2, "unknown.test": 1, "A.TEST": 1} {
		if got := serial(sni); got != want {
			t.Errorf("SNI %q got certificate %d, want %d", sni, got, want)
		}
	}
	if sa, sb := certs.Scope(tls.ConnectionState{ServerName: "a.test"}), certs.Scope(tls.ConnectionState{ServerName: "x.b.test"}); sa == sb {
		t.Fatalf("two certificates share the scope %q", sa)
	}
	writeCert(t, a, ak, "a.test", 3)
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial("a.test"); got != 3 {
		t.Fatalf("after reload a.test got certificate %d, want 3", got)
	}
	os.WriteFile(a, []byte("garbage"), 0o600)
	if err := certs.Reload(); err == nil {
		t.Fatal("reloading a broken certificate succeeded")
	}
	if got := serial("a.test"); got != 3 {
		t.Fatalf("after a failed reload a.test got certificate %d, want 3 (kept)", got)
	}
}

// TestShutdownAbortsHandshakes: handshakes in progress when Shutdown starts
// are aborted, not waited for until their timeout, and are not counted as
// failed handshakes: one client silent after connecting, one in the middle
// of its ClientHello.
func TestShutdownAbortsHandshakes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := mustTLSMetrics(t, reg)
	s := startServer(t, ServerConfig{Handler: okHandler(), Metrics: m, Timeouts: Timeouts{Handshake: time.Hour}})
	silent, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	partial, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := partial.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
	// Both handshakes are in progress once the open-connections gauge
	// counts them (the listener admits a connection, then counts it).
	for testutil.ToFloat64(m.conns.open) != 2 {
		runtime.Gosched()
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(30 * time.Second): // a hang guard, not a measurement
		t.Fatal("Shutdown is still waiting for handshakes in progress")
	}
	for _, c := range []net.Conn{silent, partial} {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("server sent data to an aborted handshake")
		}
	}
	if got := testutil.ToFloat64(m.conns.open); got != 0 {
		t.Errorf("open connections after Shutdown = %v, want 0", got)
	}
	for _, r := range []string{ReasonTimeout, ReasonClientClosed, ReasonBadClientHello, ReasonOther} {
		if got := testutil.ToFloat64(m.errs[r]); got != 0 {
			t.Errorf("aborted handshakes counted as %s failures: %v", r, got)
		}
	}
}
