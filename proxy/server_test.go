package proxy

import (
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// startServer runs a Server on a free loopback port until the test ends.
func startServer(t *testing.T, cfg ServerConfig) *Server {
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
	m := NewTLSMetrics(prometheus.NewRegistry())
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
	m := NewTLSMetrics(prometheus.NewRegistry())
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

func TestPerConnValueReachesRequests(t *testing.T) {
	type tag struct{ n int }
	var calls atomic.Int32
	s := startServer(t, ServerConfig{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, _ := ConnValue(r.Context()).(*tag)
			if v == nil {
				http.Error(w, "no value", 500)
				return
			}
			fmt.Fprint(w, v.n)
		}),
		PerConn: func(base *tls.Config) (*tls.Config, any) {
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

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := startServer(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "finished")
	})})
	addr := s.Addr().String()
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := c.Get("https://" + addr + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-entered
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- s.Shutdown(ctx)
	}()
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	case r := <-done:
		t.Fatalf("request ended (%+v) before it was released", r)
	default:
	}
	close(release)
	if r := <-done; r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: %q, %v; want it to finish", r.body, r.err)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("listener still accepts after Shutdown")
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
