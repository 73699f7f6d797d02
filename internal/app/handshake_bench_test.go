package app

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// BenchmarkResumedHandshake guards the allocations of one resumed
// handshake-only connection through a node's real listener (#13): a node
// in tickets mode, wired as edgeproxy runs it (limits, per-connection
// session hooks, handshake metrics, HTTP server), and a client in this
// process that resumes, sends close_notify and waits for the server's
// close, so each connection is fully served within its iteration.
// allocs/op and cpu-µs/op (this process's CPU time) count both ends; the
// client's share is the same before and after a server change. Run it with
//
//	go test -run '^$' -bench ResumedHandshake -benchmem ./internal/app/
func BenchmarkResumedHandshake(b *testing.B) { benchResumed(b, nil) }

// BenchmarkResumedGET is BenchmarkResumedHandshake with one proxied
// HTTP/1.1 GET per connection, sent as `edgeproxy bench --http` sends it
// (Connection: close): the client reads the response until the server
// closes. It guards the allocations of the per-connection path from accept
// through http.Server to close (#13); the upstream (an httptest server in
// this process, reached over keep-alive) is in the counts too.
func BenchmarkResumedGET(b *testing.B) {
	benchResumed(b, []byte("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: edgeproxy-bench\r\nConnection: close\r\n\r\n"))
}

// benchResumed measures resumed connections that each send req, or only
// close_notify if req is nil.
func benchResumed(b *testing.B, req []byte) {
	up := httptest.NewServer(demoapp.Handler("up"))
	b.Cleanup(up.Close)
	off := ""
	a := startNode(b, config.Config{Admin: &off, Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: config.Resumption{Mode: "tickets"}})
	addr := a.Addr().String()
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		b.Run(v.name, func(b *testing.B) {
			cli := &tls.Config{
				InsecureSkipVerify: true, MinVersion: v.version, MaxVersion: v.version,
				CurvePreferences:   []tls.CurveID{tls.X25519},
				ClientSessionCache: tls.NewLRUClientSessionCache(1),
			}
			connectOnce(b, addr, cli, req) // the full handshake that issues the first ticket
			b.ReportAllocs()
			cpu0 := selfCPU()
			for b.Loop() {
				if !connectOnce(b, addr, cli, req) {
					b.Fatal("did not resume")
				}
			}
			b.ReportMetric(float64(selfCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}

// connectOnce dials addr, completes a handshake, sends req (if not nil) or
// closes its side, and reads until the server closed; it reports whether
// the handshake resumed. A response to req must be a 200.
func connectOnce(b *testing.B, addr string, cli *tls.Config, req []byte) bool {
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := tls.Client(raw, cli)
	defer c.Close()
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
	if req != nil {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		var resp [512]byte
		n, err := io.ReadAtLeast(c, resp[:], len("HTTP/1.1 200"))
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.HasPrefix(resp[:n], []byte("HTTP/1.1 200")) {
			b.Fatalf("response %q, want a 200", resp[:n])
		}
	} else if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	// TLS 1.3 tickets arrive after the handshake; io.Copy reads them, then
	// the rest of the response, then the server's close_notify.
	if _, err := io.Copy(io.Discard, c); err != nil {
		b.Fatal(err)
	}
	return c.ConnectionState().DidResume
}
