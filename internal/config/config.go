// Package config reads and validates edgeproxy's YAML configuration file.
// It only describes and checks; building the proxy from a Config is the
// job of internal/app.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeproxy/edgeproxy/internal/heapfloor"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/proxy/acme"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/stateful"
	memcachestore "github.com/edgeproxy/edgeproxy/sessioncache/memcache"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

// Defaults for fields whose zero value means "use the default".
const (
	DefaultListen          = "127.0.0.1:8443"
	DefaultShutdownTimeout = 30 * time.Second
	DefaultMode            = resumption.ModeTickets
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the TLS address. Default DefaultListen.
	Listen string `yaml:"listen"`
	// Admin is the admin listener (/metrics, /healthz, /readyz). Absent:
	// proxy.DefaultAdminListen; the empty string turns it off.
	Admin *string `yaml:"admin"`
	// Pprof mounts /debug/pprof on the admin listener.
	Pprof bool `yaml:"pprof"`
	// AdminTokenFile names a file holding the bearer token that the admin
	// listener's pprof and DELETE /sessions/{id} require; only its owner
	// may read it, and one trailing newline is ignored. It is read at
	// start. Empty: no route asks for a credential.
	AdminTokenFile string `yaml:"admin_token_file"`
	// AdminHosts are the names, besides IP literals and localhost, that the
	// admin listener accepts in a Host header (DNS rebinding protection).
	// Empty: IP literals and localhost only.
	AdminHosts []string `yaml:"admin_hosts"`
	// AdminTimeouts bound the admin listener's connections. Zero fields:
	// the proxy.DefaultAdmin*Timeout constants.
	AdminTimeouts proxy.AdminTimeouts `yaml:"admin_timeouts"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// TLS configures certificates and versions.
	TLS TLS `yaml:"tls"`
	// Timeouts for client connections.
	Timeouts proxy.Timeouts `yaml:"timeouts"`
	// Limits bound what clients can take from the node.
	Limits proxy.Limits `yaml:"limits"`
	// ProxyProtocol reads PROXY protocol headers from trusted load
	// balancers on the TLS listener. Absent: off.
	ProxyProtocol proxy.ProxyProtocol `yaml:"proxy_protocol"`
	// UnderscoresInHeaders forwards request header names that contain
	// "_"; by default they are dropped, as nginx does.
	UnderscoresInHeaders bool `yaml:"underscores_in_headers"`
	// ShutdownTimeout bounds draining on SIGTERM. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Routes map hosts and paths to upstream pools. At least one.
	Routes []proxy.RouteConfig `yaml:"routes"`
	// Resumption configures TLS session resumption.
	Resumption Resumption `yaml:"resumption"`
	// GC sets the heap floor below which the garbage collector does not
	// run (#13). Absent: heapfloor.DefaultMinHeapBytes.
	GC heapfloor.Config `yaml:"gc"`
}

// Log configures zap.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json (default) or console.
	Format string `yaml:"format"`
	// Access turns the per-request access log on (default) or off.
	Access *bool `yaml:"access"`
	// AccessFormat is json (default: a "request" entry with fields),
	// common or combined (Common/Combined Log Format lines).
	AccessFormat string `yaml:"access_format"`
	// TimeFormat is rfc3339 or epoch, the timestamps of log entries. If
	// empty, epoch seconds in json and ISO 8601 in console.
	TimeFormat string `yaml:"time_format"`
}

// Log time formats.
const (
	TimeFormatRFC3339 = "rfc3339"
	TimeFormatEpoch   = "epoch"
)

// TLS configures the TLS listener.
type TLS struct {
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// Certificates are PEM certificate/key pairs, selected by SNI; the
	// first is the default. Empty: an in-memory self-signed certificate
	// for localhost (a warning is logged).
	Certificates []proxy.CertConfig `yaml:"certificates"`
	// StrictSNIHost answers 421 Misdirected Request to a request whose
	// Host the connection's certificate (chosen by SNI) does not cover:
	// HTTP/2 connection reuse across certificate groups, domain fronting.
	// Absent: on whenever client certificates are requested (ClientAuthOn),
	// so that a connection authenticated for one host cannot be reused
	// for another; false turns it off explicitly. See StrictSNI.
	StrictSNIHost *bool `yaml:"strict_sni_host"`
	// ClientAuth is the default client-certificate (mTLS) policy and the
	// headers carrying the verified identity upstream (#14);
	// Certificates[i].ClientAuth overrides the policy for one
	// certificate's names. Zero: no certificate is requested.
	ClientAuth proxy.ClientAuthSettings `yaml:"client_auth"`
	// ACME, if set, gets and renews certificates for its hosts
	// automatically (issue #9); static Certificates still serve their
	// names. Absent: no ACME.
	ACME *acme.Config `yaml:"acme"`
}

// ClientAuthOn reports whether some policy requests client certificates:
// the default or a certificate's override.
func (t *TLS) ClientAuthOn() bool {
	on := func(m string) bool { return m == proxy.ClientAuthRequire || m == proxy.ClientAuthVerifyIfGiven }
	if on(t.ClientAuth.Mode) {
		return true
	}
	for _, c := range t.Certificates {
		if c.ClientAuth != nil && on(c.ClientAuth.Mode) {
			return true
		}
	}
	return false
}

// StrictSNI reports whether 421 Misdirected Request is on: StrictSNIHost
// if set, else ClientAuthOn.
func (t *TLS) StrictSNI() bool {
	if t.StrictSNIHost != nil {
		return *t.StrictSNIHost
	}
	return t.ClientAuthOn()
}

// validateClientAuth checks tls.client_auth and the per-certificate
// overrides without reading the CA files (proxy.LoadClientAuth does, at
// start and in CheckFiles).
func (t *TLS) validateClientAuth() []error {
	var errs []error
	if err := t.ClientAuth.Policy().Validate(); err != nil {
		errs = append(errs, prefixErrors("tls.client_auth.", err))
	}
	h := t.ClientAuth.Headers
	for _, f := range []struct{ name, v string }{{"subject", h.Subject}, {"sans", h.SANs}, {"sha256", h.SHA256}} {
		if f.v != "" && !validHeaderName(f.v) {
			errs = append(errs, fmt.Errorf("tls.client_auth.headers.%s: %q: not a valid header name", f.name, f.v))
		}
	}
	for i, c := range t.Certificates {
		if c.ClientAuth == nil {
			continue
		}
		field := fmt.Sprintf("tls.certificates[%d].client_auth.", i)
		if c.ClientAuth.Mode == "" {
			errs = append(errs, fmt.Errorf("%smode: required: require, verify_if_given or none", field))
		}
		if err := c.ClientAuth.Validate(); err != nil {
			errs = append(errs, prefixErrors(field, err))
		}
	}
	return errs
}

// Resumption configures how sessions resume across the fleet.
type Resumption struct {
	// Mode is tickets (default), redis, memcached, sticky or off.
	Mode string `yaml:"mode"`
	// SessionLifetime bounds how long a session resumes.
	// Default resumption.DefaultSessionLifetime; at most
	// resumption.MaxLifetime (see resumption.CheckSessionLifetime).
	SessionLifetime time.Duration `yaml:"session_lifetime"`
	// TicketKeys configures the ticket key ring for mode tickets.
	TicketKeys TicketKeys `yaml:"ticket_keys"`
	// Store tunes the stateful modes (redis, memcached, sticky).
	Store Store `yaml:"store"`
	// Redis is the shared session store for mode redis.
	Redis redisstore.Config `yaml:"redis"`
	// Memcached is the shared session store for mode memcached.
	Memcached memcachestore.Config `yaml:"memcached"`
	// SessionIDHeader names the request header that carries a non-secret
	// session identifier to the upstream in the stateful modes, for
	// revocation through the admin API (DELETE /sessions/{id}). Absent:
	// DefaultSessionIDHeader; the empty string turns it off.
	SessionIDHeader *string `yaml:"session_id_header"`
}

// DefaultSessionIDHeader is the header that carries the session identifier.
const DefaultSessionIDHeader = "X-TLS-Session-ID"

// Store tunes the stateful modes.
type Store struct {
	// Timeout bounds each call to the shared store, and so what a slow
	// store adds to a handshake. Default stateful.DefaultTimeout (25ms).
	Timeout time.Duration `yaml:"timeout"`
	// SingleUse deletes a session when it resumes, so each ticket works
	// once. Browsers that open parallel connections with one ticket then
	// see full handshakes on all but one.
	SingleUse bool `yaml:"single_use"`
	// LocalCache bounds the node-local cache (the whole store in mode
	// sticky, the degraded-mode copy otherwise).
	LocalCache LocalCache `yaml:"local_cache"`
	// Breaker stops calling a failing store for a while.
	Breaker Breaker `yaml:"breaker"`
	// StrictRevocation turns read-through off: every resumption reads the
	// shared store, and a revocation holds on every node at once. By
	// default (false, and single_use false) a client returning to the node
	// that last served its session resumes from the node-local cache
	// without a store call, and a revoked session may still resume there
	// for up to revocation_poll (twice that at most).
	StrictRevocation bool `yaml:"strict_revocation"`
	// RevocationPoll is how often each node reads the fleet's revocation
	// generation. Default stateful.DefaultRevocationPoll (100ms).
	RevocationPoll time.Duration `yaml:"revocation_poll"`
	// CommitAsync lets a connection be served as soon as its session is
	// queued for the store writers, without waiting for the store's
	// acknowledgement (at most timeout): a client that reconnects to
	// another node within the commit delay then gets a full handshake
	// there. Default false (wait).
	CommitAsync bool `yaml:"commit_async"`
	// CommitQueue bounds the sessions waiting for the store writers; a
	// session that finds it full resumes on its own node only. Default
	// stateful.DefaultCommitQueue (4096).
	CommitQueue int `yaml:"commit_queue"`
	// CommitWorkers is the number of store writers. Default
	// stateful.DefaultCommitWorkers.
	CommitWorkers int `yaml:"commit_workers"`
}

// LocalCache bounds the node-local session cache.
type LocalCache struct {
	// MaxEntries: default 100000.
	MaxEntries int `yaml:"max_entries"`
	// MaxBytes: default 64 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
}

// Breaker configures the circuit breaker in front of the shared store.
type Breaker struct {
	// Failures is how many store errors among the last 32 calls, and at
	// least half of them, open it. Default 5.
	Failures int `yaml:"failures"`
	// Cooldown is the longest it stays open between probes (the first
	// comes after 100ms, the wait doubling). Default 500ms.
	Cooldown time.Duration `yaml:"cooldown"`
}

// TicketKeys configures where ticket keys come from.
type TicketKeys struct {
	// Source is generate (default: random keys in memory, one node only),
	// file (nginx/HAProxy key files shared by the fleet), or redis.
	Source string `yaml:"source"`
	// Files are key files for source file: base64 lines (HAProxy
	// tls-ticket-keys) or binary (nginx), see ticketkeys.KeyFileFormat. The
	// sealing key of the first file seals new tickets.
	Files []string `yaml:"files"`
	// KeySize is 48 or 80, the size of each key in binary key files. If
	// zero it is inferred; only a binary file whose size is a multiple of
	// both (240, 480, ...) needs it.
	KeySize int `yaml:"key_size"`
	// RotateEvery is the rotation period for sources generate and redis.
	// Default 1h.
	RotateEvery time.Duration `yaml:"rotate_every"`
	// Redis is the shared store for source redis.
	Redis RedisKeys `yaml:"redis"`
}

// RedisKeys configures the redis ticket key source.
type RedisKeys struct {
	// Addrs are host:port of the Redis node, Cluster nodes, or Sentinels.
	Addrs []string `yaml:"addrs"`
	// MasterName selects Sentinel mode.
	MasterName string `yaml:"master_name"`
	// PasswordFile holds the Redis password.
	PasswordFile string `yaml:"password_file"`
	// KEKFile holds the 32-byte key-encryption key that wraps ticket keys
	// in Redis. Required: Redis never holds a raw ticket key.
	KEKFile string `yaml:"kek_file"`
	// KeyPrefix is prepended to every Redis key.
	KeyPrefix string `yaml:"key_prefix"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	c, err := LoadUnvalidated(path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadUnvalidated reads the file at path, rejecting unknown fields, without
// validating it: the caller applies command-line overrides first.
func LoadUnvalidated(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML, rejecting unknown fields, and validates it.
func Parse(r io.Reader) (*Config, error) {
	c, err := decode(r)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decode(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, err
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fieldErrors(data, err)
	}
	return c, nil
}

// Validate checks the whole configuration without I/O and returns every
// problem found, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Listen != "" {
		if err := checkListenAddr(c.Listen); err != nil {
			add("listen: %q: %v", c.Listen, err)
		}
	}
	if c.Admin != nil && *c.Admin != "" {
		if err := checkListenAddr(*c.Admin); err != nil {
			add("admin: %q: %v", *c.Admin, err)
		}
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		add("log.level: %q: must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "json", "console":
	default:
		add("log.format: %q: must be json or console", c.Log.Format)
	}
	if err := proxy.AccessFormat(c.Log.AccessFormat).Validate(); err != nil {
		add("log.access_format: %v", err)
	}
	switch c.Log.TimeFormat {
	case "", TimeFormatRFC3339, TimeFormatEpoch:
	default:
		add("log.time_format: %q: must be rfc3339 or epoch", c.Log.TimeFormat)
	}
	if _, err := proxy.ParseTLSVersion(c.TLS.MinVersion); err != nil {
		add("tls.min_version: %v", err)
	}
	for i, cc := range c.TLS.Certificates {
		if cc.Cert == "" {
			add("tls.certificates[%d].cert: required", i)
		}
		if cc.Key == "" {
			add("tls.certificates[%d].key: required", i)
		}
	}
	if err := c.GC.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.TLS.validateClientAuth()...)
	if c.TLS.ACME != nil {
		if err := c.TLS.ACME.Validate(); err != nil {
			errs = append(errs, prefixErrors("tls.", err))
		}
	}
	// A slice, not a map: errors come out in the file's order.
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"timeouts.handshake", c.Timeouts.Handshake}, {"timeouts.read_header", c.Timeouts.ReadHeader},
		{"timeouts.idle", c.Timeouts.Idle}, {"timeouts.write", c.Timeouts.Write}, {"shutdown_timeout", c.ShutdownTimeout},
	} {
		if f.d < 0 {
			add("%s: must not be negative, got %q", f.name, f.d)
		}
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.ProxyProtocol.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateAdmin()...)
	if len(c.Routes) == 0 {
		add("routes: at least one route is required")
	} else if err := proxy.ValidateRoutes(c.Routes); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Resumption.validate()...)
	return errors.Join(errs...)
}

func (r *Resumption) validate() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch r.Mode {
	case "", resumption.ModeTickets, resumption.ModeOff,
		resumption.ModeRedis, resumption.ModeMemcached, resumption.ModeSticky:
	default:
		add("resumption.mode: %q: must be tickets, redis, memcached, sticky or off", r.Mode)
	}
	if err := resumption.CheckSessionLifetime(r.SessionLifetime); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, r.validateStore()...)
	k := r.TicketKeys
	if k.RotateEvery < 0 {
		add("resumption.ticket_keys.rotate_every: must be positive, got %q", k.RotateEvery)
	}
	switch k.Source {
	case "", "generate":
		if len(k.Files) > 0 {
			add("resumption.ticket_keys.files: set, but source is %q; set source: file", k.Source)
		}
	case "file":
		if len(k.Files) == 0 {
			add("resumption.ticket_keys.files: required when source is file")
		}
		for i, f := range k.Files {
			if f == "" {
				add("resumption.ticket_keys.files[%d]: empty path", i)
			}
		}
	case "redis":
		// The store client's own check (addresses, password): its errors
		// name redis.<field>.
		if err := k.Redis.StoreConfig().Validate(); err != nil {
			add("resumption.ticket_keys.%w", err)
		}
		if k.Redis.KEKFile == "" {
			add("resumption.ticket_keys.redis.kek_file: required: Redis must never hold a raw ticket key")
		}
	default:
		add("resumption.ticket_keys.source: %q: must be generate, file or redis", k.Source)
	}
	return errs
}

// StoreConfig is the Redis client configuration of the key source.
func (k RedisKeys) StoreConfig() redisstore.Config {
	return redisstore.Config{Addrs: k.Addrs, MasterName: k.MasterName, PasswordFile: k.PasswordFile}
}

// checkListenAddr accepts an address to listen on: host:port with a numeric
// port. Unlike the address of a server to reach (sessioncache.CheckAddr),
// the host may be empty (all interfaces) and the port 0 (any free port).
func checkListenAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("must be host:port")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q must be a number 0-65535", port)
	}
	return nil
}

func (r *Resumption) validateStore() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	st := r.Store
	// The stateful backend owns the timeout and breaker checks.
	sc := stateful.Config{Timeout: st.Timeout, RevocationPoll: st.RevocationPoll, CommitQueue: st.CommitQueue, CommitWorkers: st.CommitWorkers, Breaker: stateful.BreakerConfig{Failures: st.Breaker.Failures, Cooldown: st.Breaker.Cooldown}}
	if err := sc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if st.LocalCache.MaxEntries < 0 {
		add("resumption.store.local_cache.max_entries: must not be negative, got %d", st.LocalCache.MaxEntries)
	}
	if st.LocalCache.MaxBytes < 0 {
		add("resumption.store.local_cache.max_bytes: must not be negative, got %d", st.LocalCache.MaxBytes)
	}
	if h := r.SessionIDHeader; h != nil && *h != "" && !validHeaderName(*h) {
		add("resumption.session_id_header: %q: not a valid header name", *h)
	}
	// The shared store's own checks name their fields (redis.addrs[0],
	// memcached.servers[1]); only the store the mode uses is checked.
	switch r.Mode {
	case resumption.ModeRedis:
		if err := r.Redis.Validate(); err != nil {
			add("resumption.%w", err)
		}
	case resumption.ModeMemcached:
		if err := r.Memcached.Validate(); err != nil {
			add("resumption.%w", err)
		}
	}
	return errs
}

func validHeaderName(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validateAdmin checks the admin listener's hardening fields; the token
// file itself is read at start.
func (c *Config) validateAdmin() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for i, h := range c.AdminHosts {
		if !validHostName(h) {
			add("admin_hosts[%d]: %q: must be a DNS name without a port", i, h)
		}
	}
	t := c.AdminTimeouts
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"admin_timeouts.read_header", t.ReadHeader}, {"admin_timeouts.read", t.Read},
		{"admin_timeouts.write", t.Write}, {"admin_timeouts.idle", t.Idle},
	} {
		if f.d < 0 {
			add("%s: must not be negative, got %q", f.name, f.d)
		}
	}
	return errs
}

// validHostName accepts letters, digits, hyphens and dots, up to 253 bytes.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// prefixErrors puts prefix before each error a section's Validate joined,
// so that every line names its full path (tls.acme.hosts[0]).
func prefixErrors(prefix string, err error) error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return fmt.Errorf("%s%w", prefix, err)
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, fmt.Errorf("%s%w", prefix, e))
	}
	return errors.Join(out...)
}
