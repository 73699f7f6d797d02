package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// TestMisdirectedRequest serves two certificate groups and sends, on one
// HTTP/2 connection made for a.example, requests for a.example and for a host
// of the other group, as a coalescing browser or a domain fronter would.
func TestMisdirectedRequest(t *testing.T) {
	t.Parallel()
	ca := testserver.NewCA(t, "edge")
	aCert, aKey, _ := ca.Issue(t, "a", false, "a.example")
	bCert, bKey, _ := ca.Issue(t, "b", false, "*.b.example")
	certs, err := LoadCerts([]CertConfig{{Cert: aCert, Key: aKey}, {Cert: bCert, Key: bKey}})
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, "up", nil)
	for _, strict := range []bool{true, false} {
		hc := HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{up.URL}}}}
		if strict {
			hc.CoveredHost = certs.Covers
		}
		s := startServer(t, ServerConfig{Handler: newTestHandler(t, hc), TLS: NewTLSConfig(TLSOptions{Certs: certs})})
		// One HTTP/2 connection, its certificate chosen by SNI a.example.
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.example", RootCAs: ca.Pool}, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		cc, err := tr.NewClientConn(t.Context(), "https", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		for host, want := range map[string]int{"a.example": 200, "A.example:443": 200, "x.b.example": 421, "other.example": 421} {
			if !strict {
				want = 200
			}
			req, _ := http.NewRequest("GET", "https://"+host+"/", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatalf("strict %v, Host %s: %v", strict, host, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("Host %s: %s, want HTTP/2 (one connection for every host)", host, resp.Proto)
			}
			if resp.StatusCode != want {
				t.Errorf("strict %v, Host %s on a.example's connection: %d, want %d", strict, host, resp.StatusCode, want)
			}
		}
		cc.Close()
	}
}

func TestCertsCovers(t *testing.T) {
	t.Parallel()
	ca := testserver.NewCA(t, "covers")
	aCert, aKey, _ := ca.Issue(t, "a", false, "a.example", "127.0.0.1")
	bCert, bKey, _ := ca.Issue(t, "b", false, "*.b.example")
	certs, err := LoadCerts([]CertConfig{{Cert: aCert, Key: aKey}, {Cert: bCert, Key: bKey}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni, host string
		want      bool
	}{
		{"a.example", "a.example", true},
		{"a.example", "a.example:8443", true},
		{"a.example", "A.EXAMPLE.", true},
		{"a.example", "x.b.example", false},
		{"x.b.example", "y.b.example", true},
		{"x.b.example", "b.example", false},
		{"x.b.example", "z.y.b.example", false},
		{"", "127.0.0.1:8443", true}, // no SNI: the first certificate
		{"", "x.b.example", false},
	}
	for _, tt := range tests {
		if got := certs.Covers(tt.sni, tt.host); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.sni, tt.host, got, tt.want)
		}
	}
}

// TestUpstreamTLS proxies to an https upstream with a private CA that
// requires a client certificate, and checks the connection is reused.
func TestUpstreamTLS(t *testing.T) {
	t.Parallel()
	ca := testserver.NewCA(t, "upstream")
	_, _, serverPair := ca.Issue(t, "upstream.internal", false, "upstream.internal")
	clientCert, clientKey, _ := ca.Issue(t, "edgeproxy", true)
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool}
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.StartTLS()
	t.Cleanup(up.Close)

	for _, withClientCert := range []bool{true, false} {
		rc := RouteConfig{Upstreams: []string{up.URL}, TLS: UpstreamTLSConfig{CAFiles: []string{ca.File}, ServerName: "upstream.internal"}}
		if withClientCert {
			rc.TLS.ClientCert, rc.TLS.ClientKey = clientCert, clientKey
		}
		ts := serveProxy(t, newTestHandler(t, HandlerConfig{Routes: []RouteConfig{rc}}))
		conns.Store(0)
		for i := range 3 {
			got := doRequest(t, ts, "GET", "/", "")
			switch {
			case withClientCert && (got.status != 200 || got.body != "edgeproxy"):
				t.Fatalf("request %d: %d %q, want 200 with the client certificate's name", i, got.status, got.body)
			case !withClientCert && got.status != http.StatusBadGateway:
				t.Fatalf("without a client certificate: %d, want 502", got.status)
			}
		}
		if withClientCert && conns.Load() != 1 {
			t.Errorf("3 requests opened %d upstream connections, want 1 (reuse)", conns.Load())
		}
	}
}

func TestUpstreamTLSFileErrors(t *testing.T) {
	t.Parallel()
	_, err := NewHandler(HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{"https://127.0.0.1:1"}, TLS: UpstreamTLSConfig{CAFiles: []string{"/nonexistent/ca.pem"}}}}})
	if err == nil || !strings.Contains(err.Error(), "routes[0].tls.ca_files[0]") {
		t.Fatalf("error %v, want one naming routes[0].tls.ca_files[0]", err)
	}
}

// TestClientCertRefusalIsCounted: a handshake refused because the client sent
// no certificate where one is required has its own reason.
func TestClientCertRefusalIsCounted(t *testing.T) {
	t.Parallel()
	ca := testserver.NewCA(t, "clientcert")
	certs, err := SelfSignedCerts()
	if err != nil {
		t.Fatal(err)
	}
	conf := NewTLSConfig(TLSOptions{Certs: certs})
	conf.ClientAuth, conf.ClientCAs = tls.RequireAndVerifyClientCert, ca.Pool
	m := mustTLSMetrics(t, prometheus.NewRegistry())
	s := startServer(t, ServerConfig{Handler: okHandler(), TLS: conf, Metrics: m})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		raw, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
		err = c.Handshake()
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			_, err = c.Read(make([]byte, 1))
		}
		if err == nil {
			t.Fatalf("TLS %x: handshake without a client certificate succeeded", v)
		}
		io.Copy(io.Discard, raw) // the server counts before it closes
		raw.Close()
	}
	if n := testutil.ToFloat64(m.errs[ReasonClientCert]); n != 2 {
		t.Errorf("handshake errors {reason=%q} = %v, want 2", ReasonClientCert, n)
	}
}
