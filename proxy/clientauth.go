package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
)

// Client-certificate modes, the values of ClientAuthConfig.Mode (#14).
const (
	// ClientAuthNone requests no certificate.
	ClientAuthNone = "none"
	// ClientAuthRequire refuses a handshake without a certificate that
	// verifies against the policy's CAs.
	ClientAuthRequire = "require"
	// ClientAuthVerifyIfGiven accepts a handshake without a certificate,
	// and verifies one that is sent.
	ClientAuthVerifyIfGiven = "verify_if_given"
)

// Default names of the headers that carry a verified client identity
// upstream (ClientCertHeaders).
const (
	DefaultClientCertSubjectHeader = "X-Client-Cert-Subject"
	DefaultClientCertSANsHeader    = "X-Client-Cert-SANs"
	DefaultClientCertSHA256Header  = "X-Client-Cert-SHA256"
)

// ClientAuthConfig is one client-certificate (mTLS) policy: the node's
// (tls.client_auth) or one certificate's override
// (tls.certificates[i].client_auth).
type ClientAuthConfig struct {
	// Mode is ClientAuthRequire, ClientAuthVerifyIfGiven or ClientAuthNone.
	// If empty, no certificate is requested.
	Mode string `yaml:"mode"`
	// CAFiles are PEM files of the CAs a client certificate must chain to.
	// Required with require and verify_if_given. They are read at start
	// and on every reload (SIGHUP).
	CAFiles []string `yaml:"ca_files"`
}

// on reports whether the policy requests certificates.
func (c ClientAuthConfig) on() bool {
	return c.Mode == ClientAuthRequire || c.Mode == ClientAuthVerifyIfGiven
}

// Validate checks the policy without reading the CA files. Errors name
// the field relative to the policy ("mode: ...", "ca_files[0]: ...").
func (c ClientAuthConfig) Validate() error {
	var errs []error
	switch c.Mode {
	case "", ClientAuthNone, ClientAuthRequire, ClientAuthVerifyIfGiven:
	default:
		errs = append(errs, fmt.Errorf("mode: %q: must be require, verify_if_given or none", c.Mode))
	}
	switch {
	case c.on() && len(c.CAFiles) == 0:
		errs = append(errs, fmt.Errorf("ca_files: required with mode %s", c.Mode))
	case !c.on() && len(c.CAFiles) > 0:
		errs = append(errs, fmt.Errorf("ca_files: set, but mode is %q: set mode: require or verify_if_given", c.Mode))
	}
	for i, f := range c.CAFiles {
		if f == "" {
			errs = append(errs, fmt.Errorf("ca_files[%d]: empty path", i))
		}
	}
	return errors.Join(errs...)
}

// ClientAuthSettings is the node's client-certificate configuration
// (tls.client_auth): its default policy and the identity headers.
type ClientAuthSettings struct {
	// Mode is as in ClientAuthConfig; empty: no certificate is requested.
	Mode string `yaml:"mode"`
	// CAFiles are as in ClientAuthConfig.
	CAFiles []string `yaml:"ca_files"`
	// Headers name the headers that carry the verified identity upstream.
	Headers ClientCertHeaders `yaml:"headers"`
}

// Policy returns the node's default policy.
func (s ClientAuthSettings) Policy() ClientAuthConfig {
	return ClientAuthConfig{Mode: s.Mode, CAFiles: s.CAFiles}
}

// ClientCertHeaders names the request headers that carry a connection's
// verified client certificate upstream. Empty fields take the Default*
// names. Whatever a client sends under these names (and the default
// names) is removed: see Names.
type ClientCertHeaders struct {
	// Subject carries the leaf's subject, RFC 2253 style ("CN=a,O=b").
	Subject string `yaml:"subject"`
	// SANs carries the leaf's subject alternative names, comma-separated
	// with their type: "DNS:a.example, email:x@y, URI:spiffe://z, IP:10.0.0.1".
	SANs string `yaml:"sans"`
	// SHA256 carries the lower-case hex SHA-256 of the leaf (DER).
	SHA256 string `yaml:"sha256"`
}

func (h ClientCertHeaders) withDefaults() ClientCertHeaders {
	if h.Subject == "" {
		h.Subject = DefaultClientCertSubjectHeader
	}
	if h.SANs == "" {
		h.SANs = DefaultClientCertSANsHeader
	}
	if h.SHA256 == "" {
		h.SHA256 = DefaultClientCertSHA256Header
	}
	return h
}

// Names returns the header names only the proxy may set: the configured
// and the default ones, for HandlerConfig.ProxyHeaders.
func (h ClientCertHeaders) Names() []string {
	d := h.withDefaults()
	return []string{d.Subject, d.SANs, d.SHA256,
		DefaultClientCertSubjectHeader, DefaultClientCertSANsHeader, DefaultClientCertSHA256Header}
}

// Set sets the identity headers in out from the first verified chain of
// cs, the leaf crypto/tls verified in the full handshake and keeps in the
// session for a resumed one. It sets nothing without a verified chain (no
// certificate, mode none): the headers must already have been removed
// from a client's request (HandlerConfig.ProxyHeaders).
func (h ClientCertHeaders) Set(out http.Header, cs *tls.ConnectionState) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return
	}
	leaf := cs.VerifiedChains[0][0]
	d := h.withDefaults()
	sum := sha256.Sum256(leaf.Raw)
	out.Set(d.Subject, headerSafe(leaf.Subject.String()))
	if sans := certSANs(leaf); sans != "" {
		out.Set(d.SANs, headerSafe(sans))
	}
	out.Set(d.SHA256, hex.EncodeToString(sum[:]))
}

func certSANs(c *x509.Certificate) string {
	var s []string
	for _, n := range c.DNSNames {
		s = append(s, "DNS:"+n)
	}
	for _, n := range c.EmailAddresses {
		s = append(s, "email:"+n)
	}
	for _, u := range c.URIs {
		s = append(s, "URI:"+u.String())
	}
	for _, ip := range c.IPAddresses {
		s = append(s, "IP:"+ip.String())
	}
	return strings.Join(s, ", ")
}

// headerSafe escapes bytes a header value must not hold (controls,
// non-ASCII) as \xHH, so an odd subject never fails the upstream request.
func headerSafe(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ClientAuth is a loaded, immutable set of client-certificate policies:
// the node's default and per-certificate overrides, with their CA pools.
// Certs.SetClientAuth puts it in force.
type ClientAuth struct {
	def     *clientPolicy
	perCert []*clientPolicy // by index in the certificate list; nil: def
	asks    bool            // some policy asks for a certificate
}

type clientPolicy struct {
	auth tls.ClientAuthType
	pool *x509.CertPool
	// scope is appended to the certificate group in the resumption scope:
	// "" when no certificate is requested, else the mode and a fingerprint
	// of the CA pool, so that a session resumes only under the policy and
	// the CAs that verified it (a removed CA, a changed mode: full
	// handshake).
	scope string
}

// LoadClientAuth reads the CA files of the default policy and of each
// certificate's ClientAuth override. Errors name the field
// (tls.client_auth.ca_files[0], tls.certificates[1].client_auth.ca_files[0]).
// The configurations must have passed Validate.
func LoadClientAuth(def ClientAuthConfig, certs []CertConfig) (*ClientAuth, error) {
	a := &ClientAuth{}
	var errs []error
	var err error
	if a.def, err = loadClientPolicy("tls.client_auth", def); err != nil {
		errs = append(errs, err)
	}
	for i, cc := range certs {
		if cc.ClientAuth == nil {
			a.perCert = append(a.perCert, nil)
			continue
		}
		p, err := loadClientPolicy(fmt.Sprintf("tls.certificates[%d].client_auth", i), *cc.ClientAuth)
		if err != nil {
			errs = append(errs, err)
		}
		a.perCert = append(a.perCert, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	a.asks = a.def.auth != tls.NoClientCert
	for _, p := range a.perCert {
		a.asks = a.asks || p != nil && p.auth != tls.NoClientCert
	}
	return a, nil
}

func loadClientPolicy(field string, c ClientAuthConfig) (*clientPolicy, error) {
	p := &clientPolicy{auth: tls.NoClientCert}
	switch c.Mode {
	case "", ClientAuthNone:
		return p, nil
	case ClientAuthRequire:
		p.auth = tls.RequireAndVerifyClientCert
	case ClientAuthVerifyIfGiven:
		p.auth = tls.VerifyClientCertIfGiven
	default:
		return nil, fmt.Errorf("%s.mode: %q: must be require, verify_if_given or none", field, c.Mode)
	}
	p.pool = x509.NewCertPool()
	var sums [][sha256.Size]byte
	for i, f := range c.CAFiles {
		certs, err := readCACerts(f)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_files[%d]: %w", field, i, err)
		}
		for _, cert := range certs {
			p.pool.AddCert(cert)
			sums = append(sums, sha256.Sum256(cert.Raw))
		}
	}
	// The fingerprint ignores file order and duplicates.
	slices.SortFunc(sums, func(a, b [sha256.Size]byte) int { return strings.Compare(string(a[:]), string(b[:])) })
	sums = slices.Compact(sums)
	h := sha256.New()
	for _, s := range sums {
		h.Write(s[:])
	}
	p.scope = fmt.Sprintf("|client_auth=%s:%x", c.Mode, h.Sum(nil)[:8])
	return p, nil
}

// readCACerts reads every CERTIFICATE block of a PEM file; it fails if
// there is none or one does not parse.
func readCACerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%q: no PEM certificate found", path)
	}
	return certs, nil
}

// SetClientAuth puts client-certificate policies in force for new
// handshakes (ConfigureClientAuth) and in the resumption scope (Scope). A
// nil a requests no certificate anywhere. A handshake in progress while
// the policies change may have its session stamped with the new scope
// after a verification against the old CAs; crypto/tls re-checks a resumed
// chain against the CAs in force, so even such a session does not outlive
// a removed CA.
func (c *Certs) SetClientAuth(a *ClientAuth) { c.clientAuth.Store(a) }

// AsksClientCerts reports whether any policy in force asks clients for a
// certificate. Without one, a connection needs no client-auth hook.
func (c *Certs) AsksClientCerts() bool {
	a := c.clientAuth.Load()
	return a != nil && a.asks
}

// clientPolicyFor returns the policy for a server name: the override of
// the static certificate SNI selects, else the default. nil: none.
func (c *Certs) clientPolicyFor(serverName string) *clientPolicy {
	a := c.clientAuth.Load()
	if a == nil {
		return nil
	}
	if c.managedFor(serverName, false) == nil {
		if e := c.set.Load().pick(serverName); e != nil && e.index < len(a.perCert) && a.perCert[e.index] != nil {
			return a.perCert[e.index]
		}
	}
	return a.def
}

// clientScope is the client-auth part of the resumption scope of a
// connection with this server name.
func (c *Certs) clientScope(serverName string) string {
	if p := c.clientPolicyFor(serverName); p != nil {
		return p.scope
	}
	return ""
}

// ConfigureClientAuth installs in conf, which must be one connection's
// own configuration (ServerConfig.PerConn), a GetConfigForClient hook
// that, for a server name whose policy requests client certificates,
// returns a clone of conf asking for and verifying them against the
// policy's CAs. The clone keeps conf's session hooks, so the connection
// resumes as it would without client auth, within the scope Scope gives.
// TLS-ALPN-01 validation handshakes (ACME) are never asked for a
// certificate.
func (c *Certs) ConfigureClientAuth(conf *tls.Config) {
	if !c.AsksClientCerts() {
		return // nothing to choose per server name: no hook, no copy
	}
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLSProtocol {
			return nil, nil
		}
		p := c.clientPolicyFor(hello.ServerName)
		if p == nil || p.auth == tls.NoClientCert {
			return nil, nil
		}
		cc := conf.Clone()
		cc.GetConfigForClient = nil
		cc.ClientAuth, cc.ClientCAs = p.auth, p.pool
		return cc, nil
	}
}
