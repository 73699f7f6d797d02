package main

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// startFloor serves -floor on a loopback port until the test ends.
func startFloor(t *testing.T) (addr string, client *tls.Config) {
	t.Helper()
	ca := testserver.NewCA(t, "floor")
	_, _, pair := ca.Issue(t, "localhost", false, "localhost")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- serveFloor(ln, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	}()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("serveFloor: %v", err)
		}
	})
	return ln.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}
}

// TestFloorClosesWithCloseNotify: a connection without h2 is held until the
// client closes its side, then closed with a close_notify alert (the last
// record the client receives), and a second connection resumes; for TLS 1.2
// and 1.3 each. (crypto/tls reads a bare EOF at a record boundary as io.EOF
// too, so the test looks at the records.)
func TestFloorClosesWithCloseNotify(t *testing.T) {
	addr, base := startFloor(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cfg := base.Clone()
			cfg.MinVersion, cfg.MaxVersion = v, v
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			cfg.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256} // TLS 1.2: the record sizes below
			for i, wantResumed := range []bool{false, true} {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				rec := &recordingConn{Conn: raw}
				c := tls.Client(rec, cfg)
				if err := c.Handshake(); err != nil {
					t.Fatal(err)
				}
				cs := c.ConnectionState()
				if cs.Version != v || cs.DidResume != wantResumed || cs.NegotiatedProtocol != "" {
					t.Fatalf("connection %d: version %x, resumed %v, ALPN %q; want %x, %v, none", i, cs.Version, cs.DidResume, cs.NegotiatedProtocol, v, wantResumed)
				}
				rec.after = nil // from here on: what the server sends after the handshake
				rec.recording = true
				if err := c.CloseWrite(); err != nil { // our close_notify
					t.Fatal(err)
				}
				// Reads the TLS 1.3 ticket on the way, then the server's close.
				if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("after our close_notify: %d bytes, %v; want io.EOF", n, err)
				}
				c.Close()
				if typ, length := lastRecord(rec.after); !isCloseNotify(v, typ, length) {
					t.Fatalf("connection %d: last record from the server: type %d, %d bytes; want an encrypted close_notify alert", i, typ, length)
				}
			}
		})
	}
}

// recordingConn keeps what is read once recording.
type recordingConn struct {
	net.Conn
	recording bool
	after     []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.recording {
		c.after = append(c.after, p[:n]...)
	}
	return n, err
}

// lastRecord returns the type and length of the last whole TLS record in b.
func lastRecord(b []byte) (typ byte, length int) {
	for len(b) >= 5 {
		typ, length = b[0], int(b[3])<<8|int(b[4])
		if len(b) < 5+length {
			return 0, 0
		}
		b = b[5+length:]
	}
	return typ, length
}

// isCloseNotify reports whether a record of this type and length is an
// encrypted alert with AES-GCM: an alert record with an explicit nonce in
// TLS 1.2 (8 + 2 + 16 bytes), an application_data record of 2 bytes plus
// the inner type in TLS 1.3 (2 + 1 + 16). Only close_notify is sent there.
func isCloseNotify(v uint16, typ byte, length int) bool {
	if v == tls.VersionTLS12 {
		return typ == 21 && length == 8+2+16
	}
	return typ == 23 && length == 2+1+16
}

// TestFloorServesH2: offered h2, the floor serves it and answers "ok".
func TestFloorServesH2(t *testing.T) {
	addr, cfg := startFloor(t)
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("got %s %d %q (%v), want HTTP/2 200 \"ok\"", resp.Proto, resp.StatusCode, body, err)
	}
}
