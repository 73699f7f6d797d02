package proxy

import (
	"cmp"
	"crypto/tls"
	"fmt"
)

// IntermediateCipherSuites are Mozilla's "intermediate" TLS 1.2 suites that
// crypto/tls implements. TLS 1.3 suites are not configurable in Go.
var IntermediateCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ParseTLSVersion maps "1.2" and "1.3" to crypto/tls constants. Empty is 1.2.
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q: must be 1.2 or 1.3", s)
}

// VersionName returns "1.2" or "1.3" for a crypto/tls version constant.
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS10:
		return "1.0"
	}
	return "unknown"
}

// ConnSession is what the session layer learnt about one connection's
// handshake. ServerConfig.PerConn returns it with the connection's TLS
// configuration; the listener reports the end of the handshake to it, and
// requests find it with ConnSessionFrom. resumption.ConnSession implements
// it. Implementations must be safe for use by the handshake goroutine and,
// once the handshake ended, by the connection's requests.
type ConnSession interface {
	// SessionID returns the non-secret identifier of the session the
	// connection resumed or was issued, or "" if it has none.
	SessionID() string
	// HandshakeDone is called once, when the handshake ended: err is nil
	// if it completed (the client is authenticated by its Finished), else
	// the handshake's error. Work that must wait for a completed handshake
	// (#12: writing the issued session to the store, consuming a
	// single-use session) belongs here.
	HandshakeDone(err error)
}

// TLSOptions configures NewTLSConfig.
type TLSOptions struct {
	// Certs selects certificates. Required.
	Certs *Certs
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13. If zero, TLS 1.2.
	MinVersion uint16
}

// NewTLSConfig returns the server tls.Config: ALPN h2 and http/1.1, Mozilla
// intermediate suites, SNI certificate selection. Session tickets are off
// in it: a connection resumes only with the configuration that
// ServerConfig.PerConn returns for it, where the session layer installs its
// WrapSession and UnwrapSession hooks and turns tickets on. The hooks are
// installed in that one place, so no connection can resume with
// crypto/tls's own ticket keys. Client certificates are likewise asked for
// only through the per-connection hook Certs.ConfigureClientAuth installs,
// which picks the policy of the SNI name.
func NewTLSConfig(o TLSOptions) *tls.Config {
	return &tls.Config{
		MinVersion:             cmp.Or(o.MinVersion, tls.VersionTLS12),
		CipherSuites:           IntermediateCipherSuites,
		NextProtos:             []string{"h2", "http/1.1"},
		GetCertificate:         o.Certs.GetCertificate,
		SessionTicketsDisabled: true,
	}
}
