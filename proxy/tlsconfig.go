package proxy

import (
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

// SessionHooks is what the resumption layer plugs into a tls.Config.
// resumption.Layer implements it.
type SessionHooks interface {
	Configure(*tls.Config)
}

// TLSOptions configures NewTLSConfig.
type TLSOptions struct {
	// Certs selects certificates. Required.
	Certs *Certs
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13. If zero, TLS 1.2.
	MinVersion uint16
	// Sessions installs WrapSession/UnwrapSession. If nil, session tickets
	// are disabled and no connection resumes.
	Sessions SessionHooks
}

// NewTLSConfig returns the server tls.Config: ALPN h2 and http/1.1, Mozilla
// intermediate suites, SNI certificate selection, and the resumption hooks.
func NewTLSConfig(o TLSOptions) *tls.Config {
	c := &tls.Config{
		MinVersion:     o.MinVersion,
		CipherSuites:   IntermediateCipherSuites,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: o.Certs.GetCertificate,
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if o.Sessions != nil {
		o.Sessions.Configure(c)
	} else {
		c.SessionTicketsDisabled = true
	}
	return c
}
