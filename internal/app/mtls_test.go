package app

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

// headerEcho is an upstream that answers with the request headers it got,
// as JSON.
func headerEcho(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(up.Close)
	return up
}

// mtlsGet makes one HTTP/1.1 request for host over a new TLS connection to
// addr, presenting cert if not nil, and returns the headers the upstream
// saw and the connection state. Any failure (a refused handshake shows on
// the first read in TLS 1.3) is returned, not fatal.
func mtlsGet(addr, host string, version uint16, cert *tls.Certificate, cache tls.ClientSessionCache, extra http.Header) (http.Header, tls.ConnectionState, error) {
	conf := &tls.Config{
		InsecureSkipVerify: true, ServerName: host, ClientSessionCache: cache,
		MinVersion: version, MaxVersion: version, NextProtos: []string{"http/1.1"},
	}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return nil, tls.ConnectionState{}, err
	}
	defer c.Close()
	req, _ := http.NewRequest("GET", "https://"+host+"/", nil)
	req.Close = true
	for k, v := range extra {
		req.Header[k] = v
	}
	if err := req.Write(c); err != nil {
		return nil, c.ConnectionState(), err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return nil, c.ConnectionState(), err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.ConnectionState(), fmt.Errorf("status %d", resp.StatusCode)
	}
	var seen http.Header
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		return nil, c.ConnectionState(), err
	}
	return seen, c.ConnectionState(), nil
}

// mtlsEnv is a client CA whose root a node trusts through caFile, a client
// certificate it issued, and a server certificate for localhost.
type mtlsEnv struct {
	ca, other       *testserver.CA
	caFile          string
	client          tls.Certificate
	fingerprint     string // hex SHA-256 of the client leaf
	srvCert, srvKey string
	upstream        string
}

func newMTLSEnv(t *testing.T) *mtlsEnv {
	t.Helper()
	e := &mtlsEnv{ca: testserver.NewCA(t, "client-ca"), other: testserver.NewCA(t, "other-ca"), upstream: headerEcho(t).URL}
	e.caFile = filepath.Join(t.TempDir(), "clients.pem")
	copyFile(t, e.ca.File, e.caFile)
	_, _, e.client = e.ca.Issue(t, "alice", true, "alice.example")
	sum := sha256.Sum256(e.client.Certificate[0])
	e.fingerprint = hex.EncodeToString(sum[:])
	e.srvCert, e.srvKey = testserver.WriteCertFiles(t, t.TempDir(), "server")
	return e
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}

func (e *mtlsEnv) config(mode string, res config.Resumption) config.Config {
	return config.Config{
		TLS: config.TLS{
			Certificates: []proxy.CertConfig{{Cert: e.srvCert, Key: e.srvKey}},
			ClientAuth:   proxy.ClientAuthSettings{Mode: mode, CAFiles: []string{e.caFile}},
		},
		Routes:     []proxy.RouteConfig{{Upstreams: []string{e.upstream}}},
		Resumption: res,
	}
}

// checkIdentity fails unless seen carries e's client identity under the
// default header names.
func (e *mtlsEnv) checkIdentity(t *testing.T, seen http.Header) {
	t.Helper()
	want := map[string]string{
		proxy.DefaultClientCertSubjectHeader: "CN=alice",
		proxy.DefaultClientCertSANsHeader:    "DNS:alice.example",
		proxy.DefaultClientCertSHA256Header:  e.fingerprint,
	}
	for h, v := range want {
		if got := seen.Values(h); len(got) != 1 || got[0] != v {
			t.Errorf("upstream saw %s = %q, want %q", h, got, v)
		}
	}
}

var tlsVersions = []struct {
	name string
	v    uint16
}{{"tls12", tls.VersionTLS12}, {"tls13", tls.VersionTLS13}}

func TestMTLSRequire(t *testing.T) {
	t.Parallel()
	e := newMTLSEnv(t)
	_, _, stranger := e.other.Issue(t, "mallory", true, "mallory.example")
	for _, mode := range []string{"tickets", "off"} {
		addr := startNode(t, e.config(proxy.ClientAuthRequire, config.Resumption{Mode: mode})).Addr().String()
		for _, v := range tlsVersions {
			t.Run(mode+"/"+v.name, func(t *testing.T) {
				if _, _, err := mtlsGet(addr, "localhost", v.v, nil, nil, nil); err == nil {
					t.Error("no client certificate: request served, want the handshake refused")
				}
				if _, _, err := mtlsGet(addr, "localhost", v.v, &stranger, nil, nil); err == nil {
					t.Error("certificate from an untrusted CA: request served, want the handshake refused")
				}
				forged := http.Header{"X-Client-Cert-Subject": {"CN=root"}, "X-Client-Cert-Sha256": {"00"}, "X_client_cert_sans": {"DNS:x"}}
				seen, cs, err := mtlsGet(addr, "localhost", v.v, &e.client, nil, forged)
				if err != nil {
					t.Fatalf("valid client certificate: %v", err)
				}
				if cs.Version != v.v {
					t.Errorf("negotiated %s, want %s", proxy.VersionName(cs.Version), v.name)
				}
				e.checkIdentity(t, seen)
			})
		}
	}
}

func TestMTLSVerifyIfGivenAndHeaderNames(t *testing.T) {
	t.Parallel()
	e := newMTLSEnv(t)
	cfg := e.config(proxy.ClientAuthVerifyIfGiven, config.Resumption{})
	cfg.TLS.ClientAuth.Headers = proxy.ClientCertHeaders{Subject: "X-Peer-Subject"}
	node := startNode(t, cfg)
	addr := node.Addr().String()
	forged := http.Header{"X-Peer-Subject": {"CN=root"}, "X-Client-Cert-Subject": {"CN=root"}, "X-Client-Cert-Sha256": {"00"}}
	seen, _, err := mtlsGet(addr, "localhost", tls.VersionTLS13, nil, nil, forged)
	if err != nil {
		t.Fatalf("verify_if_given without a certificate: %v", err)
	}
	for _, h := range []string{"X-Peer-Subject", "X-Client-Cert-Subject", "X-Client-Cert-Sha256", "X-Client-Cert-Sans"} {
		if v := seen.Values(h); len(v) > 0 {
			t.Errorf("no certificate, yet the upstream saw %s = %q", h, v)
		}
	}
	seen, _, err = mtlsGet(addr, "localhost", tls.VersionTLS13, &e.client, nil, forged)
	if err != nil {
		t.Fatalf("verify_if_given with a certificate: %v", err)
	}
	if got := seen.Values("X-Peer-Subject"); len(got) != 1 || got[0] != "CN=alice" {
		t.Errorf("X-Peer-Subject = %q, want [CN=alice]", got)
	}
	if got := seen.Values("X-Client-Cert-Subject"); len(got) != 0 {
		t.Errorf("X-Client-Cert-Subject (default name, renamed) = %q, want it removed", got)
	}
	if got := seen.Get(proxy.DefaultClientCertSHA256Header); got != e.fingerprint {
		t.Errorf("SHA-256 header = %q, want %q", got, e.fingerprint)
	}
}

// resumptionModes are the fleet-wide modes the mTLS tests cover, each
// shared by two nodes: a ticket key file, a Redis server.
func resumptionModes(t *testing.T) []struct {
	name string
	res  func(t *testing.T) config.Resumption
} {
	return []struct {
		name string
		res  func(t *testing.T) config.Resumption
	}{
		{"tickets", func(t *testing.T) config.Resumption {
			keyFile := filepath.Join(t.TempDir(), "keys")
			writeKeys(t, keyFile, newKey(t))
			return config.Resumption{TicketKeys: config.TicketKeys{Source: "file", Files: []string{keyFile}}}
		}},
		{"redis", func(t *testing.T) config.Resumption {
			r := testserver.Redis(t)
			return config.Resumption{Mode: "redis", Redis: redisstore.Config{Addrs: []string{r.Addr}}}
		}},
	}
}

// TestMTLSResumedCarriesIdentity: a session issued on one node resumes on
// another without the client presenting its certificate again, and the
// upstream still sees the verified identity.
func TestMTLSResumedCarriesIdentity(t *testing.T) {
	t.Parallel()
	for _, m := range resumptionModes(t) {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			e := newMTLSEnv(t)
			res := m.res(t)
			n0 := startNode(t, e.config(proxy.ClientAuthRequire, res))
			n1 := startNode(t, e.config(proxy.ClientAuthRequire, res))
			for _, v := range tlsVersions {
				t.Run(v.name, func(t *testing.T) {
					cache := tls.NewLRUClientSessionCache(4)
					seen, cs, err := mtlsGet(n0.Addr().String(), "localhost", v.v, &e.client, cache, nil)
					if err != nil {
						t.Fatalf("full handshake: %v", err)
					}
					if cs.DidResume {
						t.Fatal("first connection resumed")
					}
					e.checkIdentity(t, seen)
					// No certificate this time: only the session can
					// authenticate the client.
					seen, cs, err = mtlsGet(n1.Addr().String(), "localhost", v.v, nil, cache, nil)
					if err != nil {
						t.Fatalf("resumption on the other node: %v", err)
					}
					if !cs.DidResume || cs.Version != v.v {
						t.Fatalf("second connection: resumed %v, version %s; want resumed, %s", cs.DidResume, proxy.VersionName(cs.Version), v.name)
					}
					e.checkIdentity(t, seen)
				})
			}
		})
	}
}

// TestMTLSCARemovedOnReload: after the client's CA leaves ca_files and the
// node reloads (what SIGHUP does), a session it verified does not resume:
// its scope no longer matches, the full handshake asks for the
// certificate, and it no longer verifies.
func TestMTLSCARemovedOnReload(t *testing.T) {
	t.Parallel()
	for _, m := range resumptionModes(t) {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			for _, v := range tlsVersions {
				t.Run(v.name, func(t *testing.T) {
					e := newMTLSEnv(t)
					node := startNode(t, e.config(proxy.ClientAuthRequire, m.res(t)))
					addr := node.Addr().String()
					mismatch := fmt.Sprintf(`edgeproxy_resumption_unwrap_total{mode=%q,result="scope_mismatch"}`, m.name)
					cache := tls.NewLRUClientSessionCache(4)
					if _, _, err := mtlsGet(addr, "localhost", v.v, &e.client, cache, nil); err != nil {
						t.Fatalf("full handshake: %v", err)
					}
					// The session resumes while the CA is trusted.
					if _, cs, err := mtlsGet(addr, "localhost", v.v, &e.client, cache, nil); err != nil || !cs.DidResume {
						t.Fatalf("before the reload: resumed %v, err %v; want resumed", cs.DidResume, err)
					}
					before := max(metricLine(t, node, mismatch), 0)

					copyFile(t, e.other.File, e.caFile)
					if err := node.Reload(); err != nil {
						t.Fatal(err)
					}
					if _, cs, err := mtlsGet(addr, "localhost", v.v, &e.client, cache, nil); err == nil {
						t.Fatalf("after the CA was removed: served (resumed %v), want refused", cs.DidResume)
					}
					if got := metricLine(t, node, mismatch); got != before+1 {
						t.Errorf("%s = %v, want %v: the old session must fail its scope", mismatch, got, before+1)
					}
					// The new pool is in force for new handshakes.
					_, _, bob := e.other.Issue(t, "bob", true, "bob.example")
					if _, _, err := mtlsGet(addr, "localhost", v.v, &bob, nil, nil); err != nil {
						t.Errorf("certificate from the new CA after reload: %v", err)
					}
				})
			}
		})
	}
}

// TestMTLSPerCertificateAndStrictSNI: a certificate's client_auth
// overrides the node's, and 421 is on by default with client auth, unless
// strict_sni_host is false.
func TestMTLSPerCertificateAndStrictSNI(t *testing.T) {
	t.Parallel()
	e := newMTLSEnv(t)
	srv := testserver.NewCA(t, "server-ca")
	aCert, aKey, _ := srv.Issue(t, "a.example", false, "a.example")
	bCert, bKey, _ := srv.Issue(t, "b.example", false, "b.example")
	cfg := e.config(proxy.ClientAuthRequire, config.Resumption{})
	cfg.TLS.Certificates = []proxy.CertConfig{
		{Cert: aCert, Key: aKey},
		{Cert: bCert, Key: bKey, ClientAuth: &proxy.ClientAuthConfig{Mode: proxy.ClientAuthNone}},
	}
	node := startNode(t, cfg)
	addr := node.Addr().String()
	if _, _, err := mtlsGet(addr, "a.example", tls.VersionTLS13, nil, nil, nil); err == nil {
		t.Error("a.example without a certificate: served, want refused")
	}
	if _, _, err := mtlsGet(addr, "b.example", tls.VersionTLS13, nil, nil, nil); err != nil {
		t.Errorf("b.example (client_auth: none) without a certificate: %v", err)
	}
	// A connection authenticated for a.example asks for b.example.
	misdirected := func(addr string) error {
		c, err := tls.Dial("tcp", addr, &tls.Config{
			InsecureSkipVerify: true, ServerName: "a.example", Certificates: []tls.Certificate{e.client}, NextProtos: []string{"http/1.1"},
		})
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := misdirected(addr); err != nil {
		t.Errorf("Host b.example on an a.example connection with client auth on: %v, want 421", err)
	}
	off := false
	cfg.TLS.StrictSNIHost = &off
	if err := misdirected(startNode(t, cfg).Addr().String()); err == nil {
		t.Error("strict_sni_host: false: got 421, want the request served")
	}
}
