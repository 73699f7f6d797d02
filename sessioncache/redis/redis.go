// Package redis is a sessioncache.Store on Redis, through go-redis's
// UniversalClient: one address is a single node, several are a Redis
// Cluster's seed nodes, and a MasterName makes the addresses Sentinels.
//
// A Store is built in two startup steps: Config.Validate checks the config
// without I/O, New builds the client without connecting, and Ping is the
// separate step that reaches the server.
//
// The package name clashes with go-redis's; import one of them renamed.
// go-redis reports dial failures through its own package-level logger
// (redis.SetLogger), not through this package.
package redis

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/internal/secretfile"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// DefaultTimeout bounds each call when Config.Timeout is zero. The resumption
// layer passes its own, shorter per-handshake deadline in ctx; this default
// only keeps other callers from waiting on a hung server.
const DefaultTimeout = 100 * time.Millisecond

// Config configures a Store. Field names in error messages use the
// snake_case form of the field (redis.key_prefix).
type Config struct {
	// Addrs are the server addresses, each host:port. One address is a
	// single node; several are seed nodes of a Redis Cluster; with MasterName
	// set they are Sentinel addresses. At least one is required.
	Addrs []string `yaml:"addrs"`

	// MasterName, if set, is the name of the master that the Sentinels at
	// Addrs monitor; the Store follows failovers.
	MasterName string `yaml:"master_name"`

	// Username is the ACL user. If empty, the server's default user is used.
	Username string `yaml:"username"`

	// Password authenticates to the server. At most one of Password,
	// PasswordFile and PasswordEnv may be set; if none is, no password is
	// sent.
	Password string `yaml:"password"`

	// PasswordFile names a file holding the password; one trailing newline
	// is ignored. New refuses a file that group or others can access (its
	// mode must be 0600 or stricter).
	PasswordFile string `yaml:"password_file"`

	// PasswordEnv names an environment variable holding the password. New
	// fails if it is unset or empty.
	PasswordEnv string `yaml:"password_env"`

	// DB is the database number. If zero, database 0. It must be zero for a
	// Cluster.
	DB int `yaml:"db"`

	// TLS makes every connection use TLS (1.2 or later), verifying the
	// server's certificate against the system roots unless TLSCAFile is set.
	TLS bool `yaml:"tls"`

	// TLSServerName is the name to verify in the server's certificate. If
	// empty, the host of each address is used. Requires TLS.
	TLSServerName string `yaml:"tls_server_name"`

	// TLSInsecureSkipVerify disables certificate verification, for testing
	// only: anyone on the network path can then pose as Redis, learn the
	// password and read or alter every stored entry. Requires TLS; conflicts
	// with TLSCAFile.
	TLSInsecureSkipVerify bool `yaml:"tls_insecure_skip_verify"`

	// TLSCAFile names a PEM file of CA certificates to verify the server
	// with, instead of the system roots. Requires TLS.
	TLSCAFile string `yaml:"tls_ca_file"`

	// KeyPrefix is prepended to every key, so several fleets can share a
	// server. The prefixed key must still pass sessioncache.CheckKey.
	KeyPrefix string `yaml:"key_prefix"`

	// PoolSize is the number of connections per node. If zero, go-redis's
	// default is used: 10 per GOMAXPROCS.
	PoolSize int `yaml:"pool_size"`

	// Timeout bounds each Get, Put and Delete, dial and pool wait included;
	// a shorter ctx deadline takes precedence. If zero, DefaultTimeout is
	// used.
	Timeout time.Duration `yaml:"-"`
}

// Validate reports the first invalid field of c. It does no I/O: it neither
// reads PasswordFile or TLSCAFile nor resolves or dials Addrs.
func (c Config) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("redis.addrs: at least one address is required")
	}
	seen := make(map[string]int, len(c.Addrs))
	for i, a := range c.Addrs {
		if err := sessioncache.CheckAddr(a); err != nil {
			return fmt.Errorf("redis.addrs[%d]: %q: %w", i, a, err)
		}
		if j, ok := seen[a]; ok {
			return fmt.Errorf("redis.addrs[%d]: %q: duplicate of redis.addrs[%d]", i, a, j)
		}
		seen[a] = i
	}
	if c.DB < 0 {
		return fmt.Errorf("redis.db: must not be negative, got %d", c.DB)
	}
	if c.DB != 0 && c.MasterName == "" && len(c.Addrs) > 1 {
		return fmt.Errorf("redis.db: must be 0 for a Redis Cluster (several addrs, no master_name), got %d", c.DB)
	}
	var pw []string
	for _, f := range []struct{ name, val string }{
		{"redis.password", c.Password}, {"redis.password_file", c.PasswordFile}, {"redis.password_env", c.PasswordEnv},
	} {
		if f.val != "" {
			pw = append(pw, f.name)
		}
	}
	if len(pw) > 1 {
		return fmt.Errorf("%s: set at most one of them", strings.Join(pw, ", "))
	}
	if c.PasswordEnv != "" && strings.ContainsAny(c.PasswordEnv, "=\x00") {
		return fmt.Errorf("redis.password_env: %q is not an environment variable name", c.PasswordEnv)
	}
	if !c.TLS {
		switch {
		case c.TLSServerName != "":
			return errors.New("redis.tls_server_name: set, but redis.tls is false")
		case c.TLSInsecureSkipVerify:
			return errors.New("redis.tls_insecure_skip_verify: set, but redis.tls is false")
		case c.TLSCAFile != "":
			return errors.New("redis.tls_ca_file: set, but redis.tls is false")
		}
	}
	if c.TLSInsecureSkipVerify && c.TLSCAFile != "" {
		return errors.New("redis.tls_insecure_skip_verify: conflicts with redis.tls_ca_file: a CA file is only used to verify")
	}
	if c.KeyPrefix != "" {
		if err := sessioncache.CheckKey(c.KeyPrefix); err != nil || len(c.KeyPrefix) >= sessioncache.MaxKeyLen {
			return fmt.Errorf("redis.key_prefix: %q: must be shorter than %d bytes with no spaces or control bytes", c.KeyPrefix, sessioncache.MaxKeyLen)
		}
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("redis.pool_size: must not be negative, got %d", c.PoolSize)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("redis.timeout: must not be negative, got %q", c.Timeout)
	}
	return nil
}

// Error is a failure of a Redis operation: the server could not be reached,
// did not answer in time, or answered with an error. A miss is not an Error:
// Get returns sessioncache.ErrMiss.
type Error struct {
	Op   string // "get", "put", "delete" or "ping"
	Addr string // the address, the comma-separated Cluster seeds, or "sentinel master NAME"
	Err  error  // the cause; errors.Is finds context.Canceled and context.DeadlineExceeded in it
}

func (e *Error) Error() string {
	return "sessioncache/redis: " + e.Op + " " + e.Addr + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the operation failed because a deadline passed:
// Config.Timeout, ctx's deadline, or a socket deadline.
func (e *Error) Timeout() bool {
	var te interface{ Timeout() bool }
	return errors.Is(e.Err, context.DeadlineExceeded) || (errors.As(e.Err, &te) && te.Timeout())
}

// Store is a sessioncache.Store on Redis. It is safe for concurrent use.
// Values are written with SET key value PX ttl and read with GET; keys are
// KeyPrefix followed by the caller's key (see sessioncache.SessionKey).
type Store struct {
	client  goredis.UniversalClient
	prefix  string
	timeout time.Duration
	addr    string // for errors
}

// New builds a Store from cfg. It validates cfg, reads the password from its
// file or environment variable and the CA file, and builds the client, but
// does not connect: call Ping to check that the server is reachable. Its
// errors start with the field at fault (redis.password_file: ...), so a
// caller that knows where the Config sits in a file prefixes only that
// path.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	password, err := cfg.password()
	if err != nil {
		return nil, err
	}
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	timeout := cmp.Or(cfg.Timeout, DefaultTimeout)
	client := goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:      cfg.Addrs,
		MasterName: cfg.MasterName,
		Username:   cfg.Username,
		Password:   password,
		DB:         cfg.DB,
		TLSConfig:  tlsConfig,
		PoolSize:   cfg.PoolSize,
		// Every call carries a deadline (see Store.bound), and the socket
		// deadlines follow it. No retries: within a handshake's budget a
		// retry rarely fits, and the caller falls back on a miss anyway.
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
	})
	addr := strings.Join(cfg.Addrs, ",")
	if cfg.MasterName != "" {
		addr = "sentinel master " + cfg.MasterName
	}
	return &Store{client: client, prefix: cfg.KeyPrefix, timeout: timeout, addr: addr}, nil
}

// password returns the password from whichever source cfg names.
func (c Config) password() (string, error) {
	switch {
	case c.PasswordEnv != "":
		pw, ok := os.LookupEnv(c.PasswordEnv)
		if !ok || pw == "" {
			return "", fmt.Errorf("redis.password_env: environment variable %q is unset or empty", c.PasswordEnv)
		}
		return pw, nil
	case c.PasswordFile != "":
		return readSecretFile("redis.password_file", c.PasswordFile)
	}
	return c.Password, nil
}

// readSecretFile reads a password file under internal/secretfile's rule.
func readSecretFile(field, name string) (string, error) {
	pw, err := secretfile.ReadString(name, 64<<10)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return pw, nil
}

// tlsConfig returns the client TLS config, or nil without TLS.
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.TLSServerName,
		InsecureSkipVerify: c.TLSInsecureSkipVerify,
	}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls_ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls_ca_file: %q holds no PEM certificate", c.TLSCAFile)
		}
	}
	return tc, nil
}

// Client returns the underlying client, so that other users of the same
// Redis (such as a shared ticket-key source) can share its connection pool.
// Keys they write are not prefixed with KeyPrefix. Closing the Store closes
// it.
func (s *Store) Client() goredis.UniversalClient { return s.client }

// Ping checks that the server answers, within ctx (not bounded by
// Config.Timeout, so that a startup check can wait longer).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.failCtx(ctx, "ping", err)
	}
	return nil
}

// Close closes the client and its connections. Calls after Close fail.
func (s *Store) Close() error {
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("sessioncache/redis: closing: %w", err)
	}
	return nil
}

func (s *Store) fail(op string, err error) error {
	return &Error{Op: op, Addr: s.addr, Err: err}
}

func noop() {}

// bound returns ctx limited to s.timeout. It adds no timer when ctx already
// ends sooner, as a handshake's ctx does.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.timeout {
		return ctx, noop
	}
	return context.WithTimeout(ctx, s.timeout)
}

// key returns the server key for key, or an error if key is illegal or too
// long once prefixed.
func (s *Store) key(op, key string) (string, error) {
	if err := sessioncache.CheckKey(key); err != nil {
		return "", fmt.Errorf("sessioncache/redis: %s: %w", op, err)
	}
	if s.prefix == "" {
		return key, nil
	}
	if n := len(s.prefix) + len(key); n > sessioncache.MaxKeyLen {
		return "", fmt.Errorf("sessioncache/redis: %s: key is %d bytes with its prefix, limit %d", op, n, sessioncache.MaxKeyLen)
	}
	return s.prefix + key, nil
}

// failCtx is fail for an error from a call made under ctx: if ctx is done
// (its deadline may have passed an instant before its timer fires), the
// error says so and wraps ctx's error.
func (s *Store) failCtx(ctx context.Context, op string, err error) error {
	cerr := ctx.Err()
	if cerr == nil {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return s.fail(op, err)
}

// Get returns the value stored under key. It returns sessioncache.ErrMiss
// if the key is absent or expired, an error if key is illegal, and an *Error
// if the server could not answer, including when ctx is done or the call
// took longer than Config.Timeout.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	k, err := s.key("get", key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, s.fail("get", err)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	val, err := s.client.Get(ctx, k).Bytes()
	if err == goredis.Nil {
		return nil, sessioncache.ErrMiss
	}
	if err != nil {
		return nil, s.failCtx(ctx, "get", err)
	}
	return val, nil
}

// Put stores val under key for ttl (rounded up to a whole millisecond),
// replacing any earlier value. It returns an error if key is illegal or ttl
// is not positive, and an *Error if the server did not store the value.
func (s *Store) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	k, err := s.key("put", key)
	if err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("sessioncache/redis: put: ttl must be positive, got %q", ttl)
	}
	if err := ctx.Err(); err != nil {
		return s.fail("put", err)
	}
	ms := int64(ttl / time.Millisecond)
	if ttl%time.Millisecond != 0 {
		ms++
	}
	if val == nil {
		val = []byte{}
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	cmd := goredis.NewStatusCmd(ctx, "set", k, val, "px", ms)
	_ = s.client.Process(ctx, cmd)
	if err := cmd.Err(); err != nil {
		return s.failCtx(ctx, "put", err)
	}
	return nil
}

// Delete removes key. Deleting a missing key returns nil. It returns an
// error if key is illegal and an *Error if the server could not answer.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.key("delete", key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return s.fail("delete", err)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.client.Del(ctx, k).Err(); err != nil {
		return s.failCtx(ctx, "delete", err)
	}
	return nil
}

var _ sessioncache.Store = (*Store)(nil)
