package app

import (
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
func BenchmarkResumedHandshake(b *testing.B) {
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
			connectOnce(b, addr, cli) // the full handshake that issues the first ticket
			b.ReportAllocs()
			cpu0 := selfCPU()
			for b.Loop() {
				if !connectOnce(b, addr, cli) {
					b.Fatal("did not resume")
				}
			}
			b.ReportMetric(float64(selfCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}

// connectOnce dials addr, completes a handshake, closes its side and reads
// until the server closed; it reports whether the handshake resumed.
func connectOnce(b *testing.B, addr string, cli *tls.Config) bool {
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := tls.Client(raw, cli)
	defer c.Close()
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	// TLS 1.3 tickets arrive after the handshake; io.Copy reads them, then
	// the server's close_notify.
	if _, err := io.Copy(io.Discard, c); err != nil {
		b.Fatal(err)
	}
	return c.ConnectionState().DidResume
}
