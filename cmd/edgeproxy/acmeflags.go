package main

import (
	"flag"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy/acme"
)

// acmeFlags registers the one-node ACME flags on fs and returns the
// override that applies those given (set holds the names of the flags
// given) on top of the file's tls.acme section.
func acmeFlags(fs *flag.FlagSet) func(c *config.Config, set map[string]bool) {
	var (
		hosts = fs.String("acme-host", "", "host name(s), comma-separated, to get certificates for automatically (ACME)")
		email = fs.String("acme-email", "", "ACME account email (expiry warnings from the CA)")
		ca    = fs.String("acme-ca", "", `ACME directory URL (default Let's Encrypt; "staging" for its staging CA)`)
		http  = fs.String("acme-http", "", `plain-HTTP address for HTTP-01 and the https redirect, e.g. ":80"`)
		dir   = fs.String("acme-dir", "", "directory for certificates and the ACME account (default ~/.local/share/certmagic)")
	)
	return func(c *config.Config, set map[string]bool) {
		if !set["acme-host"] && !set["acme-email"] && !set["acme-ca"] && !set["acme-http"] && !set["acme-dir"] {
			return
		}
		if c.TLS.ACME == nil {
			c.TLS.ACME = &acme.Config{}
		}
		a := c.TLS.ACME
		if set["acme-host"] {
			a.Hosts = splitList(*hosts)
		}
		if set["acme-email"] {
			a.Email = *email
		}
		if set["acme-ca"] {
			if *ca == "staging" {
				a.CA, a.Staging = "", true
			} else {
				a.CA = *ca
			}
		}
		if set["acme-http"] {
			a.HTTPListen = *http
		}
		if set["acme-dir"] {
			a.Storage = acme.Storage{File: *dir}
		}
	}
}
