package proxy

import (
	"crypto/tls"
	"path/filepath"
	"testing"
)

// stubManaged answers for a fixed set of names with one certificate.
type stubManaged struct {
	names map[string]bool
	cert  *tls.Certificate
}

func (s stubManaged) Manages(n string) bool { return s.names[n] }
func (s stubManaged) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert, nil
}
func (s stubManaged) Scope(n string) string { return "managed:" + n }

func TestCertsManagedOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	load := func(name string, serial int64) CertConfig {
		c := CertConfig{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+".key")}
		writeCert(t, c.Cert, c.Key, name, serial)
		return c
	}
	static, err := LoadCerts([]CertConfig{load("a.test", 1), load("*.b.test", 2)})
	if err != nil {
		t.Fatal(err)
	}
	mc, err := LoadCerts([]CertConfig{load("m.test", 100)})
	if err != nil {
		t.Fatal(err)
	}
	m := stubManaged{names: map[string]bool{"a.test": true, "x.b.test": true, "m.test": true}, cert: mc.set.Load().fallback.cert}
	static.SetManaged(m)
	managedOnly := NewManagedOnlyCerts()
	managedOnly.SetManaged(m)

	for _, tt := range []struct {
		certs  *Certs
		sni    string
		protos []string
		serial int64 // 0: handshake refused
		scope  string
	}{
		{static, "a.test", nil, 1, "0:a.test"},              // static exact beats the managed source
		{static, "m.test", nil, 100, "managed:m.test"},      // managed
		{static, "M.TEST", nil, 100, "managed:m.test"},      // case-insensitive
		{static, "x.b.test", nil, 100, "managed:x.b.test"},  // managed beats a static wildcard
		{static, "y.b.test", nil, 2, "1:*.b.test"},          // static wildcard
		{static, "unknown.test", nil, 1, "0:a.test"},        // static default
		{static, "a.test", []string{"acme-tls/1"}, 100, ""}, // a TLS-ALPN-01 validation goes to the managed source
		{managedOnly, "m.test", nil, 100, "managed:m.test"},
		{managedOnly, "unknown.test", nil, 0, ""},
	} {
		got, err := tt.certs.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni, SupportedProtos: tt.protos})
		if tt.serial == 0 {
			if err == nil {
				t.Errorf("%s: got a certificate, want an error (alert)", tt.sni)
			}
			continue
		}
		if err != nil || got.Leaf.SerialNumber.Int64() != tt.serial {
			t.Errorf("%s %v: got %v, %v; want certificate %d", tt.sni, tt.protos, got, err, tt.serial)
		}
		if tt.scope != "" {
			if s := tt.certs.Scope(tls.ConnectionState{ServerName: tt.sni}); s != tt.scope {
				t.Errorf("%s: scope %q, want %q", tt.sni, s, tt.scope)
			}
		}
	}
}
