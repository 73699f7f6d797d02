// Package acme gets and renews certificates automatically through
// certmagic (ACME: Let's Encrypt, or any RFC 8555 CA such as step-ca), as a
// certificate source beside proxy.Certs' static files. It writes no ACME
// protocol code of its own.
//
// A Manager answers for its hosts through proxy.Certs (see
// proxy.ManagedCerts): static files and ACME hosts mix, and SNI picks. It
// solves TLS-ALPN-01 on the node's TLS listener (the listener negotiates
// "acme-tls/1" and drops the connection after the handshake) and HTTP-01 on
// a plain-HTTP listener of its own that otherwise redirects to https.
// Certificates, the ACME account, challenge tokens and locks live in the
// configured certmagic Storage: a directory (a shared volume for a fleet) or
// Redis (sessioncache/redis/certstore), so that a fleet orders each
// certificate once.
package acme

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/caddyserver/certmagic"

	"github.com/edgeproxy/edgeproxy/sessioncache/redis/certstore"
)

// Challenge types.
const (
	TLSALPN01 = "tls-alpn-01"
	HTTP01    = "http-01"
)

// CA directory URLs.
const (
	LetsEncrypt        = certmagic.LetsEncryptProductionCA
	LetsEncryptStaging = certmagic.LetsEncryptStagingCA
)

// Config is the tls.acme section.
type Config struct {
	// CA is the ACME directory URL. If empty, Let's Encrypt production
	// (LetsEncrypt), or LetsEncryptStaging when Staging is set.
	CA string `yaml:"ca"`
	// Staging selects Let's Encrypt's staging CA (untrusted certificates,
	// generous rate limits). It conflicts with CA.
	Staging bool `yaml:"staging"`
	// CARoot names a PEM file of root certificates to trust for the CA's
	// own HTTPS endpoint (a private CA). If empty, the system roots.
	CARoot string `yaml:"ca_root"`
	// Email is the ACME account's contact. If empty, the account has none
	// (the CA cannot warn about expiry).
	Email string `yaml:"email"`
	// Hosts are the names to get certificates for at startup and keep
	// renewed. Required unless OnDemand is set.
	Hosts []string `yaml:"hosts"`
	// Challenges are the challenge types to offer, among TLSALPN01 and
	// HTTP01. If empty, TLSALPN01, plus HTTP01 when HTTPListen is set.
	Challenges []string `yaml:"challenges"`
	// HTTPListen is the plain-HTTP address (host:port, ":80" in production)
	// that answers HTTP-01 challenges and redirects every other request to
	// https. If empty, no plain-HTTP listener; HTTP01 then cannot be used.
	HTTPListen string `yaml:"http_listen"`
	// Storage is where certificates, the account and locks are kept.
	Storage Storage `yaml:"storage"`
	// OnDemand, if set, obtains certificates during the first handshake
	// for names it allows, beyond Hosts.
	OnDemand *OnDemand `yaml:"on_demand"`
}

// Storage selects a certmagic Storage. At most one field may be set; if
// none is, certmagic's default directory ($XDG_DATA_HOME/certmagic or
// ~/.local/share/certmagic), which only one node can use.
type Storage struct {
	// File is a directory. A fleet shares it on a shared volume.
	File string `yaml:"file"`
	// Redis keeps everything in Redis, with the session store's connection
	// settings.
	Redis *certstore.Config `yaml:"redis"`
}

// OnDemand guards on-demand issuance: a name is allowed only if it passes
// every guard that is set, and at least one must be. Without a guard a
// client could make the node order certificates for any name it sends.
type OnDemand struct {
	// Allow lists names and patterns ("*.example.com" matches one label).
	Allow []string `yaml:"allow"`
	// Ask is a URL asked GET ask?domain=NAME before ordering; only a 200
	// answer allows the name (as Caddy's on_demand_tls ask).
	Ask string `yaml:"ask"`
}

// Validate checks c without I/O. Field names are relative to the section
// ("acme.hosts[1]").
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.CA != "" {
		if c.Staging {
			add("acme.staging: conflicts with acme.ca %q: set one of them", c.CA)
		}
		if err := checkURL(c.CA); err != nil {
			add("acme.ca: %q: %v", c.CA, err)
		}
	}
	if len(c.Hosts) == 0 && c.OnDemand == nil {
		add("acme.hosts: at least one host is required (or on_demand)")
	}
	seen := map[string]int{}
	for i, h := range c.Hosts {
		if err := checkHost(h); err != nil {
			add("acme.hosts[%d]: %q: %v", i, h, err)
		}
		if j, dup := seen[strings.ToLower(h)]; dup {
			add("acme.hosts[%d]: %q: duplicate of acme.hosts[%d]", i, h, j)
		}
		seen[strings.ToLower(h)] = i
	}
	for i, ch := range c.Challenges {
		switch ch {
		case TLSALPN01:
		case HTTP01:
			if c.HTTPListen == "" {
				add("acme.challenges[%d]: %s needs acme.http_listen", i, ch)
			}
		default:
			add("acme.challenges[%d]: %q: must be %s or %s", i, ch, TLSALPN01, HTTP01)
		}
	}
	if c.HTTPListen != "" {
		if _, port, err := net.SplitHostPort(c.HTTPListen); err != nil || port == "" {
			add("acme.http_listen: %q: must be host:port", c.HTTPListen)
		}
	}
	if c.Storage.File != "" && c.Storage.Redis != nil {
		add("acme.storage: set file or redis, not both")
	}
	if r := c.Storage.Redis; r != nil {
		if err := r.Validate(); err != nil {
			add("acme.storage.%w", err)
		}
	}
	if o := c.OnDemand; o != nil {
		if len(o.Allow) == 0 && o.Ask == "" {
			add("acme.on_demand: set allow, ask or both: unguarded on-demand issuance lets any client order certificates")
		}
		for i, p := range o.Allow {
			if err := checkHost(strings.TrimPrefix(p, "*.")); err != nil {
				add("acme.on_demand.allow[%d]: %q: %v", i, p, err)
			}
		}
		if o.Ask != "" {
			if err := checkURL(o.Ask); err != nil {
				add("acme.on_demand.ask: %q: %v", o.Ask, err)
			}
		}
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("must be an http or https URL")
	}
	return nil
}

// checkHost accepts a DNS name that a public or private CA can certify
// (no wildcard: TLS-ALPN-01 and HTTP-01 cannot validate one).
func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("empty host name")
	case strings.Contains(h, "*"):
		return errors.New("wildcards need the DNS-01 challenge, which edgeproxy does not offer")
	case strings.ContainsAny(h, " /:@"), !certmagic.SubjectQualifiesForCert(h):
		return errors.New("not a host name")
	}
	return nil
}

// challenges returns the enabled challenge types.
func (c *Config) challenges() (tlsALPN, http01 bool) {
	if len(c.Challenges) == 0 {
		return true, c.HTTPListen != ""
	}
	for _, ch := range c.Challenges {
		tlsALPN = tlsALPN || ch == TLSALPN01
		http01 = http01 || ch == HTTP01
	}
	return tlsALPN, http01
}

// ca returns the directory URL in use.
func (c *Config) ca() string {
	switch {
	case c.CA != "":
		return c.CA
	case c.Staging:
		return LetsEncryptStaging
	}
	return LetsEncrypt
}
