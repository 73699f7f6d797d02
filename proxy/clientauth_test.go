package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// TestClientAuthScopeFingerprint: the scope names the policy and its CA
// set, whatever the order or repetition of the files, and changes when a
// CA leaves the set or the mode changes.
func TestClientAuthScopeFingerprint(t *testing.T) {
	t.Parallel()
	a, b := testserver.NewCA(t, "a"), testserver.NewCA(t, "b")
	both := filepath.Join(t.TempDir(), "both.pem")
	pa, _ := os.ReadFile(a.File)
	pb, _ := os.ReadFile(b.File)
	if err := os.WriteFile(both, append(pb, pa...), 0o600); err != nil {
		t.Fatal(err)
	}
	scope := func(mode string, files ...string) string {
		t.Helper()
		ca, err := LoadClientAuth(ClientAuthConfig{Mode: mode, CAFiles: files}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ca.def.scope
	}
	ab := scope(ClientAuthRequire, a.File, b.File)
	if got := scope(ClientAuthRequire, both, a.File); got != ab {
		t.Errorf("same CAs in another order: scope %q, want %q", got, ab)
	}
	if got := scope(ClientAuthRequire, b.File); got == ab {
		t.Errorf("CA a removed: scope unchanged %q", got)
	}
	if got := scope(ClientAuthVerifyIfGiven, a.File, b.File); got == ab {
		t.Errorf("mode changed: scope unchanged %q", got)
	}
	if got := scope(ClientAuthNone); got != "" {
		t.Errorf("mode none: scope %q, want empty (sessions issued before mTLS keep resuming)", got)
	}
}

func TestClientCertHeadersSet(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("spiffe://example.org/svc")
	leaf := &x509.Certificate{Raw: []byte("der")}
	leaf.Subject.CommonName = "a\nb\u00e9"
	leaf.DNSNames, leaf.EmailAddresses, leaf.URIs = []string{"a.example"}, []string{"x@example.org"}, []*url.URL{u}
	h := http.Header{}
	ClientCertHeaders{SANs: "X-SANs"}.Set(h, &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}})
	for name, want := range map[string]string{
		DefaultClientCertSubjectHeader: `CN=a\x0ab\xc3\xa9`,
		"X-SANs":                       "DNS:a.example, email:x@example.org, URI:spiffe://example.org/svc",
		// printf der | sha256sum
		DefaultClientCertSHA256Header: "5050d80d22ecd471ea55df7034042c1e041341ff4066e7f6ff38e20b720df8ea",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// Unverified: PeerCertificates alone set nothing.
	h = http.Header{}
	ClientCertHeaders{}.Set(h, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
	if len(h) != 0 {
		t.Errorf("no verified chain, yet headers %v", h)
	}
}
