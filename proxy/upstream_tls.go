package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// clientConfig returns the TLS client configuration for a route's https
// upstreams: base (HandlerConfig.UpstreamTLS, may be nil) with c applied.
// path names c in errors, e.g. "routes[0].tls".
func (c *UpstreamTLSConfig) clientConfig(base *tls.Config, path string) (*tls.Config, error) {
	if c.isZero() {
		if base == nil {
			return nil, nil
		}
		return base.Clone(), nil
	}
	tc := &tls.Config{}
	if base != nil {
		tc = base.Clone()
	}
	if len(c.CAFiles) > 0 {
		pool := x509.NewCertPool()
		for i, f := range c.CAFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("%s.ca_files[%d]: %w", path, i, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s.ca_files[%d]: %q: no PEM certificate in it", path, i, f)
			}
		}
		tc.RootCAs = pool
	}
	if c.ServerName != "" {
		tc.ServerName = c.ServerName
	}
	if c.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("%s.client_cert: loading %q with %q: %w", path, c.ClientCert, c.ClientKey, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	v, err := ParseTLSVersion(c.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("%s.min_version: %w", path, err)
	}
	tc.MinVersion = v
	return tc, nil
}
