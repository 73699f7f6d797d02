package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// CertConfig names one certificate and key file pair (PEM).
type CertConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientAuth, if set, replaces the node's client-certificate policy
	// (tls.client_auth) for the names this certificate is selected for
	// (#14). Its Mode is then required.
	ClientAuth *ClientAuthConfig `yaml:"client_auth"`
}

// Certs selects a certificate by SNI among several, and can be reloaded
// while handshakes run. The selected certificate's group is also the
// connection's resumption scope: a session issued under one certificate never
// resumes under another. Certs is safe for concurrent use.
type Certs struct {
	files   []CertConfig
	set     atomic.Pointer[certSet]
	managed atomic.Pointer[managedRef]
	// clientAuth holds the client-certificate policies (clientauth.go);
	// nil: none.
	clientAuth atomic.Pointer[ClientAuth]
}

// ManagedCerts is a certificate source that manages its own names, such as
// ACME (proxy/acme.Manager). Its methods must be safe for concurrent use.
type ManagedCerts interface {
	// Manages reports whether the source answers for a lower-case server
	// name.
	Manages(serverName string) bool
	// GetCertificate is a tls.Config.GetCertificate hook for those names
	// and for TLS-ALPN-01 validation handshakes.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Scope returns the resumption scope (certificate group) of a name it
	// answers for; it must differ from every static group ("N:name").
	Scope(serverName string) string
}

type managedRef struct{ m ManagedCerts }

// SetManaged adds a managed source. SNI then picks, in this order: a static
// certificate naming the server exactly; the managed source, if it answers
// for the name (and always for a TLS-ALPN-01 validation handshake, which
// offers only the "acme-tls/1" protocol); a static wildcard certificate;
// the first static certificate. Without static certificates, a name the
// source does not answer for fails its handshake.
func (c *Certs) SetManaged(m ManagedCerts) { c.managed.Store(&managedRef{m}) }

// NewManagedOnlyCerts returns Certs with no static certificate, for a node
// whose certificates all come from the source set with SetManaged.
func NewManagedOnlyCerts() *Certs {
	c := &Certs{}
	c.set.Store(newCertSet(nil))
	return c
}

// certSet is an immutable snapshot of loaded certificates.
type certSet struct {
	exact    map[string]*certEntry // lower-case DNS name or IP
	wildcard map[string]*certEntry // "example.com" for "*.example.com"
	fallback *certEntry            // the first certificate
}

type certEntry struct {
	cert  *tls.Certificate
	index int      // in the certificate list, for ClientAuth overrides
	group string   // the scope: index and first name, e.g. "0:example.com"
	names []string // lower-case names and IPs the certificate is for; "*.x" for wildcards
}

// covers reports whether host (lower case, no port) is one of the entry's
// names, or one label under one of its wildcards.
func (e *certEntry) covers(host string) bool {
	for _, n := range e.names {
		if n == host {
			return true
		}
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			if i := strings.IndexByte(host, '.'); i > 0 && host[i+1:] == suffix {
				return true
			}
		}
	}
	return false
}

// LoadCerts loads the certificate files. It fails if any pair does not load.
func LoadCerts(files []CertConfig) (*Certs, error) {
	c := &Certs{files: append([]CertConfig(nil), files...)}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// SelfSignedCerts returns Certs holding one in-memory ECDSA P-256 certificate
// for localhost, 127.0.0.1 and ::1, valid for a year. Clients must be told
// to skip verification (curl -k) or trust it explicitly.
func SelfSignedCerts() (*Certs, error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	c := &Certs{}
	c.set.Store(newCertSet([]*tls.Certificate{cert}))
	return c, nil
}

// Reload reads the certificate files again and swaps them in whole. On error
// the certificates in use are kept. Certs made by SelfSignedCerts do not
// reload.
func (c *Certs) Reload() error {
	if len(c.files) == 0 {
		if c.set.Load() != nil {
			return nil
		}
		return errors.New("proxy: no certificates configured")
	}
	certs := make([]*tls.Certificate, 0, len(c.files))
	for i, f := range c.files {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return fmt.Errorf("tls.certificates[%d]: loading %q: %w", i, f.Cert, err)
		}
		certs = append(certs, &cert)
	}
	c.set.Store(newCertSet(certs))
	return nil
}

func newCertSet(certs []*tls.Certificate) *certSet {
	s := &certSet{exact: map[string]*certEntry{}, wildcard: map[string]*certEntry{}}
	for i, cert := range certs {
		leaf := cert.Leaf
		names := []string{}
		if leaf != nil {
			names = append(names, leaf.DNSNames...)
			for _, ip := range leaf.IPAddresses {
				names = append(names, ip.String())
			}
			if len(names) == 0 && leaf.Subject.CommonName != "" {
				names = append(names, leaf.Subject.CommonName)
			}
		}
		first := ""
		if len(names) > 0 {
			first = strings.ToLower(names[0])
		}
		e := &certEntry{cert: cert, index: i, group: fmt.Sprintf("%d:%s", i, first)}
		for _, n := range names {
			e.names = append(e.names, strings.ToLower(n))
		}
		if s.fallback == nil {
			s.fallback = e
		}
		for _, n := range names {
			n = strings.ToLower(n)
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := s.wildcard[suffix]; !dup {
					s.wildcard[suffix] = e
				}
			} else if _, dup := s.exact[n]; !dup {
				s.exact[n] = e
			}
		}
	}
	return s
}

// pick returns the entry for a server name: an exact name, then a wildcard
// one label up, then the first certificate.
func (s *certSet) pick(serverName string) *certEntry {
	if serverName == "" {
		return s.fallback
	}
	name := serverName
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	if e := s.exact[name]; e != nil {
		return e
	}
	if i := strings.IndexByte(name, '.'); i >= 0 {
		if e := s.wildcard[name[i+1:]]; e != nil {
			return e
		}
	}
	return s.fallback
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// GetCertificate is a tls.Config.GetCertificate hook.
func (c *Certs) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m := c.managedFor(hello.ServerName, len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLSProtocol); m != nil {
		return m.GetCertificate(hello)
	}
	e := c.set.Load().pick(hello.ServerName)
	if e == nil {
		return nil, fmt.Errorf("proxy: no certificate for server name %q", hello.ServerName)
	}
	return e.cert, nil
}

// Scope returns the certificate group a connection's SNI selects and, if
// that name's client-certificate policy requests certificates, the policy
// and a fingerprint of its CAs (SetClientAuth). It is the resumption
// scope: see resumption.Config.Scope.
func (c *Certs) Scope(cs tls.ConnectionState) string {
	if m := c.managedFor(cs.ServerName, false); m != nil {
		return m.Scope(strings.ToLower(cs.ServerName)) + c.clientScope(cs.ServerName)
	}
	if e := c.set.Load().pick(cs.ServerName); e != nil {
		return e.group + c.clientScope(cs.ServerName)
	}
	return ""
}

// managedFor returns the managed source if it serves serverName: no static
// certificate names it exactly, and the source answers for it (or the
// handshake is a TLS-ALPN-01 validation).
func (c *Certs) managedFor(serverName string, acmeTLS bool) ManagedCerts {
	ref := c.managed.Load()
	if ref == nil || serverName == "" {
		return nil
	}
	name := strings.ToLower(serverName)
	if acmeTLS {
		return ref.m
	}
	if c.set.Load().exact[name] != nil || !ref.m.Manages(name) {
		return nil
	}
	return ref.m
}

// Covers reports whether the certificate a connection with this SNI server
// name was served is valid for host, a request's Host (a port is ignored).
// It is what decides 421 Misdirected Request: see HandlerConfig.CoveredHost.
func (c *Certs) Covers(serverName, host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	return c.set.Load().pick(serverName).covers(host)
}

func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("proxy: generating serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"edgeproxy self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("proxy: self-signing: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
