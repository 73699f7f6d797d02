package redis_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/redis"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

const prefix = "test/"

// newStore returns a Store on srv that is closed when t ends.
func newStore(t testing.TB, cfg redis.Config) *redis.Store {
	t.Helper()
	s, err := redis.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	storetest.Run(t, func(t *testing.T) sessioncache.Store {
		// A generous Timeout: this suite checks behaviour, not latency, and
		// runs under -race on shared CI machines.
		return newStore(t, redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix, Timeout: 5 * time.Second})
	}, storetest.Options{
		RemainingTTL: func(s sessioncache.Store, key string) (time.Duration, error) {
			return s.(*redis.Store).Client().PTTL(context.Background(), prefix+key).Result()
		},
	})
}

func TestKeyPrefix(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	s := newStore(t, redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "fleet-a/"})
	ctx := t.Context()
	if err := s.Put(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := s.Client().Get(ctx, "fleet-a/k").Result()
	if err != nil || got != "v" {
		t.Errorf(`server GET "fleet-a/k" = (%q, %v), want "v"`, got, err)
	}
	// The prefix counts towards the key limit.
	long := strings.Repeat("k", sessioncache.MaxKeyLen-len("fleet-a/")+1)
	if err := s.Put(ctx, long, []byte("v"), time.Minute); err == nil {
		t.Error("Put(key too long once prefixed) = nil, want an error")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	one := []string{"127.0.0.1:6379"}
	tests := []struct {
		name string
		cfg  redis.Config
		want string // "" means valid
	}{
		{"single", redis.Config{Addrs: one}, ""},
		{"cluster", redis.Config{Addrs: []string{"a:7000", "b:7000", "[::1]:7000"}}, ""},
		{"sentinel_db", redis.Config{Addrs: []string{"a:26379", "b:26379"}, MasterName: "m", DB: 2}, ""},
		{"full", redis.Config{Addrs: one, Username: "u", PasswordEnv: "REDIS_PW", DB: 1, TLS: true,
			TLSServerName: "redis.internal", TLSCAFile: "/etc/ca.pem", KeyPrefix: "fleet/", PoolSize: 20, Timeout: time.Second}, ""},
		{"no_addrs", redis.Config{}, "redis.addrs: at least one address is required"},
		{"bad_addr", redis.Config{Addrs: []string{"a:1", "x:y:z"}}, `redis.addrs[1]: "x:y:z": must be host:port`},
		{"no_port", redis.Config{Addrs: []string{"localhost"}}, `redis.addrs[0]: "localhost": must be host:port`},
		{"no_host", redis.Config{Addrs: []string{":6379"}}, `redis.addrs[0]: ":6379": host is empty`},
		{"bad_port", redis.Config{Addrs: []string{"a:99999"}}, `redis.addrs[0]: "a:99999": port must be a number in 1..65535`},
		{"named_port", redis.Config{Addrs: []string{"a:redis"}}, `redis.addrs[0]: "a:redis": port must be a number in 1..65535`},
		{"duplicate", redis.Config{Addrs: []string{"a:1", "b:1", "a:1"}}, `redis.addrs[2]: "a:1": duplicate of redis.addrs[0]`},
		{"negative_db", redis.Config{Addrs: one, DB: -1}, "redis.db: must not be negative, got -1"},
		{"cluster_db", redis.Config{Addrs: []string{"a:1", "b:1"}, DB: 3}, "redis.db: must be 0 for a Redis Cluster (several addrs, no master_name), got 3"},
		{"two_passwords", redis.Config{Addrs: one, Password: "p", PasswordFile: "/f"}, "redis.password, redis.password_file: set at most one of them"},
		{"three_passwords", redis.Config{Addrs: one, Password: "p", PasswordFile: "/f", PasswordEnv: "E"},
			"redis.password, redis.password_file, redis.password_env: set at most one of them"},
		{"bad_env_name", redis.Config{Addrs: one, PasswordEnv: "A=B"}, `redis.password_env: "A=B" is not an environment variable name`},
		{"server_name_without_tls", redis.Config{Addrs: one, TLSServerName: "x"}, "redis.tls_server_name: set, but redis.tls is false"},
		{"skip_verify_without_tls", redis.Config{Addrs: one, TLSInsecureSkipVerify: true}, "redis.tls_insecure_skip_verify: set, but redis.tls is false"},
		{"ca_without_tls", redis.Config{Addrs: one, TLSCAFile: "/ca"}, "redis.tls_ca_file: set, but redis.tls is false"},
		{"skip_verify_and_ca", redis.Config{Addrs: one, TLS: true, TLSInsecureSkipVerify: true, TLSCAFile: "/ca"},
			"redis.tls_insecure_skip_verify: conflicts with redis.tls_ca_file: a CA file is only used to verify"},
		{"prefix_space", redis.Config{Addrs: one, KeyPrefix: "a b/"}, `redis.key_prefix: "a b/": must be shorter than 250 bytes with no spaces or control bytes`},
		{"negative_pool", redis.Config{Addrs: one, PoolSize: -1}, "redis.pool_size: must not be negative, got -1"},
		{"negative_timeout", redis.Config{Addrs: one, Timeout: -5 * time.Second}, `redis.timeout: must not be negative, got "-5s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() = %q\nwant         %q", got, tt.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is masked by umask
			t.Fatal(err)
		}
		return p
	}
	one := []string{"127.0.0.1:6379"}
	tests := []struct {
		name string
		cfg  redis.Config
		want string // a substring of the error
	}{
		{"invalid", redis.Config{}, "redis.addrs: at least one address is required"},
		{"pw_file_missing", redis.Config{Addrs: one, PasswordFile: filepath.Join(dir, "nope")}, "redis.password_file: open"},
		{"pw_file_group_readable", redis.Config{Addrs: one, PasswordFile: write("pw640", "secret\n", 0o640)},
			"has mode 0640: group and others must have no access (chmod 600 "},
		{"pw_file_world_readable", redis.Config{Addrs: one, PasswordFile: write("pw604", "secret\n", 0o604)}, "has mode 0604"},
		{"pw_file_empty", redis.Config{Addrs: one, PasswordFile: write("empty", "\n", 0o600)}, "is empty"},
		{"pw_file_dir", redis.Config{Addrs: one, PasswordFile: dir}, "is not a regular file"},
		{"pw_env_unset", redis.Config{Addrs: one, PasswordEnv: "EDGEPROXY_TEST_UNSET_VAR"},
			`redis.password_env: environment variable "EDGEPROXY_TEST_UNSET_VAR" is unset or empty`},
		{"ca_missing", redis.Config{Addrs: one, TLS: true, TLSCAFile: filepath.Join(dir, "nope.pem")}, "redis.tls_ca_file: open"},
		{"ca_not_pem", redis.Config{Addrs: one, TLS: true, TLSCAFile: write("ca.pem", "not a certificate", 0o644)}, "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := redis.New(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New() = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
	// A secret file with mode 0600 or stricter is accepted.
	for _, mode := range []os.FileMode{0o600, 0o400} {
		p := write("ok"+strconv.Itoa(int(mode)), "secret\n", mode)
		s, err := redis.New(redis.Config{Addrs: one, PasswordFile: p})
		if err != nil {
			t.Errorf("New(password file mode %04o) = %v", mode, err)
			continue
		}
		s.Close()
	}
}

// TestAuth checks every password source against a server that requires one,
// set up on the fly with CONFIG SET and ACL SETUSER.
func TestAuth(t *testing.T) {
	// Not parallel: it uses t.Setenv.
	srv := testserver.Redis(t)
	ctx := t.Context()
	admin := newStore(t, redis.Config{Addrs: []string{srv.Addr}, Timeout: 5 * time.Second})
	if err := admin.Client().ACLSetUser(ctx, "edge", "on", ">edge-secret", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Client().ConfigSet(ctx, "requirepass", "default-secret").Err(); err != nil {
		t.Fatal(err)
	}
	// admin stays authenticated on its open connection only; nothing else
	// below uses it.

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("default-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGEPROXY_TEST_REDIS_PW", "edge-secret")
	addrs := []string{srv.Addr}
	tests := []struct {
		name string
		cfg  redis.Config
		ok   bool
	}{
		{"password", redis.Config{Addrs: addrs, Password: "default-secret"}, true},
		{"password_file", redis.Config{Addrs: addrs, PasswordFile: pwFile}, true},
		{"acl_user_env", redis.Config{Addrs: addrs, Username: "edge", PasswordEnv: "EDGEPROXY_TEST_REDIS_PW"}, true},
		{"no_password", redis.Config{Addrs: addrs}, false},
		{"wrong_password", redis.Config{Addrs: addrs, Password: "nope"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Timeout = 5 * time.Second
			s := newStore(t, tt.cfg)
			err := s.Put(ctx, "k", []byte("v"), time.Minute)
			if tt.ok && err != nil {
				t.Fatalf("Put = %v", err)
			}
			if !tt.ok {
				var se *redis.Error
				if !errors.As(err, &se) || se.Addr != srv.Addr {
					t.Fatalf("Put = %v, want a *redis.Error for %s", err, srv.Addr)
				}
				if pe := s.Ping(ctx); pe == nil {
					t.Error("Ping = nil, want an authentication error")
				}
			}
		})
	}
}

// writeCerts writes a CA and a server certificate for "redis.test" and
// 127.0.0.1, signed by it, into dir.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "storetest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"redis.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// startTLSRedis starts a redis-server that speaks only TLS and returns its
// address and CA file. (testserver starts plain-text servers only.)
func startTLSRedis(t *testing.T) (addr, caFile string) {
	t.Helper()
	testserver.Redis(t) // fails (or skips) the test the same way if redis-server is missing
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir)
	port := testserver.FreePort(t)
	cmd := exec.Command(bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile,
		"--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Poll the process until it completes a TLS handshake (bounded).
	roots := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(caFile)
	roots.AppendCertsFromPEM(pemBytes)
	for i := 0; ; i++ {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "redis.test"})
		if err == nil {
			c.Close()
			return addr, caFile
		}
		if i == 250 {
			t.Fatalf("TLS redis-server on %s not ready: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	addr, caFile := startTLSRedis(t)
	addrs := []string{addr}
	tests := []struct {
		name string
		cfg  redis.Config
		ok   bool
	}{
		{"ca_file_and_name", redis.Config{Addrs: addrs, TLS: true, TLSCAFile: caFile, TLSServerName: "redis.test"}, true},
		{"ca_file_ip_san", redis.Config{Addrs: addrs, TLS: true, TLSCAFile: caFile}, true},
		{"insecure_skip_verify", redis.Config{Addrs: addrs, TLS: true, TLSInsecureSkipVerify: true}, true},
		{"system_roots", redis.Config{Addrs: addrs, TLS: true}, false},
		{"wrong_name", redis.Config{Addrs: addrs, TLS: true, TLSCAFile: caFile, TLSServerName: "other.test"}, false},
		{"plain_text", redis.Config{Addrs: addrs}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Timeout = 5 * time.Second
			s := newStore(t, tt.cfg)
			err := s.Put(t.Context(), "k", []byte("v"), time.Minute)
			if tt.ok {
				if err != nil {
					t.Fatalf("Put = %v", err)
				}
				if got, err := s.Get(t.Context(), "k"); err != nil || string(got) != "v" {
					t.Fatalf("Get = (%q, %v), want \"v\"", got, err)
				}
				return
			}
			wantStoreError(t, err, addr)
			t.Logf("Put: %v", err)
		})
	}
}

// wantStoreError checks that err is a store failure for addr, not a miss.
func wantStoreError(t *testing.T, err error, addr string) *redis.Error {
	t.Helper()
	if err == nil || errors.Is(err, sessioncache.ErrMiss) {
		t.Fatalf("err = %v, want a store error", err)
	}
	var se *redis.Error
	if !errors.As(err, &se) {
		t.Fatalf("err = %v (%T), want a *redis.Error", err, err)
	}
	if se.Addr != addr {
		t.Errorf("Error.Addr = %q, want %q", se.Addr, addr)
	}
	return se
}

// eventually retries op until it succeeds. It polls a server process that
// is coming back up (and go-redis's dial breaker, which re-probes once a
// second), not goroutines of this test; the wait is bounded.
func eventually(t *testing.T, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 15s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServerStopped(t *testing.T) {
	// Not parallel: it stops its server, whose port a parallel test's new
	// server could then take.
	srv := testserver.Redis(t)
	s := newStore(t, redis.Config{Addrs: []string{srv.Addr}, Timeout: 500 * time.Millisecond, PoolSize: 4})
	ctx := t.Context()
	if err := s.Put(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// Several calls: the first finds the pooled connection dead, later ones
	// are refused at dial, and go-redis's dial breaker opens after PoolSize
	// failures. Each must fail, none may miss.
	for i := range 6 {
		_, err := s.Get(ctx, "k")
		wantStoreError(t, err, srv.Addr)
		if i == 0 {
			t.Logf("Get with the server stopped: %v", err)
		}
	}
	wantStoreError(t, s.Put(ctx, "k", []byte("v"), time.Minute), srv.Addr)
	wantStoreError(t, s.Delete(ctx, "k"), srv.Addr)

	srv.Restart() // without persistence: the old entry is gone
	eventually(t, "Put after restart", func() error { return s.Put(ctx, "k", []byte("again"), time.Minute) })
	got, err := s.Get(ctx, "k")
	if err != nil || string(got) != "again" {
		t.Fatalf("Get after restart = (%q, %v), want \"again\"", got, err)
	}
}

func TestServerPaused(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	s := newStore(t, redis.Config{Addrs: []string{srv.Addr}, Timeout: 300 * time.Millisecond})
	ctx := t.Context()
	if err := s.Put(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			srv.Resume()
		}
	})

	// Bounded by Config.Timeout: ctx has no deadline.
	_, err := s.Get(context.Background(), "k")
	se := wantStoreError(t, err, srv.Addr)
	if !se.Timeout() {
		t.Errorf("Get on a paused server = %v, want a timeout", err)
	}

	// Bounded by ctx when its deadline is the sooner one: a Store with a
	// long Timeout still gives up at the caller's deadline.
	long := newStore(t, redis.Config{Addrs: []string{srv.Addr}, Timeout: time.Hour})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = long.Get(short, "k")
	se = wantStoreError(t, err, srv.Addr)
	if !errors.Is(err, context.DeadlineExceeded) || !se.Timeout() {
		t.Errorf("Get with a ctx deadline on a paused server = %v, want context.DeadlineExceeded", err)
	}

	srv.Resume()
	resumed = true
	eventually(t, "Get after resume", func() error {
		got, err := s.Get(ctx, "k")
		if err == nil && string(got) != "v" {
			t.Fatalf("Get after resume = %q, want \"v\"", got)
		}
		return err
	})
}

func TestClosed(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(t.Context(), "k")
	wantStoreError(t, err, srv.Addr)
}

// sessionSize is a typical sealed session state.
const sessionSize = 512

func benchStore(b *testing.B, timeout time.Duration) (*redis.Store, []string) {
	srv := testserver.Redis(b)
	s := newStore(b, redis.Config{Addrs: []string{srv.Addr}, Timeout: timeout})
	keys := make([]string, 1024)
	val := make([]byte, sessionSize)
	for i := range keys {
		keys[i] = sessioncache.SessionKey("bench/", []byte(strconv.Itoa(i)))
		if err := s.Put(b.Context(), keys[i], val, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	return s, keys
}

func BenchmarkGet(b *testing.B) {
	s, keys := benchStore(b, time.Second)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, keys[i&1023]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkGetHandshakeCtx calls Get the way the resumption layer does, with
// a deadline already shorter than Timeout, which saves the Store's own timer.
func BenchmarkGetHandshakeCtx(b *testing.B) {
	s, keys := benchStore(b, 2*time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, keys[i&1023]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkPut(b *testing.B) {
	s, keys := benchStore(b, time.Second)
	ctx := context.Background()
	val := make([]byte, sessionSize)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Put(ctx, keys[i&1023], val, time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s, keys := benchStore(b, time.Second)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Get(ctx, keys[i&1023]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
