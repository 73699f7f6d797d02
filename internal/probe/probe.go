// Package probe finds out what a TLS server does with session resumption,
// in the spirit of `openssl s_client -reconnect` and sslyze: per TLS version,
// whether it issues session tickets (and how big they are, and whether they
// change between connections), whether a returning client resumes over N
// reconnects, the ticket lifetime hint, and for TLS 1.2 whether it resumes by
// session ID alone.
//
// Go's TLS client does the ticket and reconnect tests. It cannot observe the
// lifetime hint nor resume by session ID, so when the openssl command is
// installed probe runs `openssl s_client` for those two and says so; without
// it, the report says they are not observable.
//
// probe does not judge certificates: it skips verification, as
// `openssl s_client` does by default.
package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"
)

// Defaults for Config fields whose zero value means "use the default".
const (
	DefaultReconnects = 5
	DefaultTimeout    = 5 * time.Second
	DefaultTicketWait = 2 * time.Second
)

// Config configures Run. Only Addr is required.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// ServerName is the SNI sent. If empty, the host part of Addr, unless
	// it is an IP address (then no SNI is sent).
	ServerName string
	// Versions are the TLS versions probed, each on its own. If empty,
	// TLS 1.2 and TLS 1.3.
	Versions []uint16
	// Reconnects is the number of connections after the first that offer
	// the latest session. If zero, DefaultReconnects (as openssl
	// s_client -reconnect).
	Reconnects int
	// Timeout bounds each connection's dial and handshake, and each
	// openssl run. If zero, DefaultTimeout.
	Timeout time.Duration
	// TicketWait bounds how long, after the handshake and the client's
	// close_notify, probe waits for the server to close: TLS 1.3 tickets
	// arrive in that time. If zero, DefaultTicketWait.
	TicketWait time.Duration
	// OpenSSL is the openssl command used for the lifetime hint and the
	// session-ID test. If empty, "openssl" is looked up in PATH.
	OpenSSL string
	// NoOpenSSL turns the openssl tests off: the report then says what Go's
	// client cannot observe.
	NoOpenSSL bool
}

func (c *Config) reconnects() int { return orDefault(c.Reconnects, DefaultReconnects) }

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// serverName is the SNI to send, "" for none.
func (c *Config) serverName() string {
	if c.ServerName != "" {
		return c.ServerName
	}
	host, _, _ := net.SplitHostPort(c.Addr)
	if net.ParseIP(strings.Trim(host, "[]")) != nil {
		return ""
	}
	return host
}

func (c *Config) versions() []uint16 {
	if len(c.Versions) == 0 {
		return []uint16{tls.VersionTLS12, tls.VersionTLS13}
	}
	return c.Versions
}

// Validate checks the configuration without I/O.
func (c *Config) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("probe: address %q: must be host:port", c.Addr))
	}
	for _, v := range c.Versions {
		if v != tls.VersionTLS12 && v != tls.VersionTLS13 {
			errs = append(errs, fmt.Errorf("probe: TLS version %#04x: must be 1.2 or 1.3", v))
		}
	}
	if c.Reconnects < 0 || c.Reconnects > 1000 {
		errs = append(errs, fmt.Errorf("probe: reconnects: must be 1 to 1000, got %d", c.Reconnects))
	}
	if c.Timeout < 0 || c.TicketWait < 0 {
		errs = append(errs, errors.New("probe: timeouts must be positive"))
	}
	return errors.Join(errs...)
}

// Report is what Run found.
type Report struct {
	Addr       string `json:"addr"`
	ServerName string `json:"server_name"`
	// OpenSSL is the openssl command used, "" if none; OpenSSLNote says
	// why none.
	OpenSSL     string          `json:"openssl,omitempty"`
	OpenSSLNote string          `json:"openssl_note,omitempty"`
	Versions    []VersionReport `json:"versions"`
}

// VersionReport is what the server does in one TLS version.
type VersionReport struct {
	Version string `json:"version"` // "1.2" or "1.3"
	// Supported is false if the first handshake failed; Error says why.
	// ConnectFailed is true if it failed before TLS, at the TCP dial: the
	// server was not reached, so nothing is known about the version.
	Supported     bool   `json:"supported"`
	ConnectFailed bool   `json:"connect_failed,omitempty"`
	Error         string `json:"error,omitempty"`
	CipherSuite   string `json:"cipher_suite,omitempty"`

	Tickets    Tickets    `json:"tickets"`
	Resumption Resumption `json:"resumption"`
	Lifetime   Lifetime   `json:"lifetime_hint"`
	// SessionID is the TLS 1.2 session-ID (stateful, no ticket) test; nil
	// for TLS 1.3, which has no session-ID resumption.
	SessionID *SessionID `json:"session_id,omitempty"`
	// Verdicts are one-line conclusions, for example
	// "resumption: works (5/5 reused)".
	Verdicts []string `json:"verdicts"`
}

// Tickets describes the session tickets the server issued to Go's client.
type Tickets struct {
	// Issued is true if any connection received a ticket.
	Issued bool `json:"issued"`
	// Size is the size in bytes of the first ticket; MinSize and MaxSize
	// span every ticket seen.
	Size    int `json:"size"`
	MinSize int `json:"min_size"`
	MaxSize int `json:"max_size"`
	// PerConnection is the number of tickets the first connection got
	// (TLS 1.3 servers may send several).
	PerConnection int `json:"per_connection"`
	// Changed counts the reconnects that received a ticket different from
	// the one they offered, out of Reconnects that completed.
	Changed    int `json:"changed"`
	Reconnects int `json:"reconnects"`
}

// Resumption is the outcome of the reconnects.
type Resumption struct {
	Reused   int       `json:"reused"`
	Attempts int       `json:"attempts"`
	Conns    []Attempt `json:"connections"`
}

// Attempt is one connection: number 0 is the first, full handshake.
type Attempt struct {
	N int `json:"n"`
	// Reused is true if the handshake resumed ("Reused" in openssl's
	// words; "New" otherwise).
	Reused bool `json:"reused"`
	// NewTickets is the number of tickets received; TicketChanged is true
	// if one differs from the ticket offered.
	NewTickets    int    `json:"new_tickets"`
	TicketChanged bool   `json:"ticket_changed"`
	Error         string `json:"error,omitempty"`
}

// Lifetime is the ticket lifetime hint.
type Lifetime struct {
	// Observable is false when it could not be read; Note says why.
	Observable bool `json:"observable"`
	// Seconds is the hint; 0 means the server left it unspecified.
	Seconds int64  `json:"seconds"`
	Source  string `json:"source,omitempty"`
	Note    string `json:"note,omitempty"`
}

// SessionID is the TLS 1.2 session-ID resumption test, run with openssl
// s_client -no_ticket -reconnect.
type SessionID struct {
	// Tested is false when openssl is not available; Note says why.
	Tested bool `json:"tested"`
	// Returned is true if the server returned a session ID.
	Returned bool   `json:"returned"`
	Reused   int    `json:"reused"`
	Attempts int    `json:"attempts"`
	Method   string `json:"method,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Run probes the server at cfg.Addr. It returns an error only for an
// invalid cfg or when ctx ends; a server that refuses a version or fails a
// handshake is described in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep := &Report{Addr: cfg.Addr, ServerName: cfg.serverName()}
	openssl := ""
	if !cfg.NoOpenSSL {
		name := cfg.OpenSSL
		if name == "" {
			name = "openssl"
		}
		if p, err := exec.LookPath(name); err == nil {
			openssl = p
		} else {
			rep.OpenSSLNote = "not installed"
		}
	} else {
		rep.OpenSSLNote = "not used"
	}
	rep.OpenSSL = openssl
	for _, v := range cfg.versions() {
		vr := probeVersion(ctx, &cfg, v)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if vr.Supported {
			probeOpenSSL(ctx, &cfg, openssl, v, &vr)
		}
		vr.Verdicts = verdicts(&vr)
		rep.Versions = append(rep.Versions, vr)
	}
	return rep, nil
}
