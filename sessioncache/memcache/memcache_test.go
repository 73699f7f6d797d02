package memcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

const prefix = "test/"

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// remainingTTL asks memcached for key's remaining TTL with the meta get
// command ("mg KEY t"), which gomemcache does not speak.
func remainingTTL(addr, key string) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(c, "mg %s t\r\n", key); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(line)
	if len(fields) > 0 && fields[0] == "EN" {
		return 0, sessioncache.ErrMiss
	}
	for _, f := range fields[1:] {
		if n, err := strconv.Atoi(strings.TrimPrefix(f, "t")); err == nil && strings.HasPrefix(f, "t") {
			return time.Duration(n) * time.Second, nil // -1s: no expiry
		}
	}
	return 0, fmt.Errorf("unexpected mg reply %q", line)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := testserver.Memcached(t)
	storetest.Run(t, func(t *testing.T) sessioncache.Store {
		// A generous Timeout: this suite checks behaviour, not latency, and
		// runs under -race on shared CI machines.
		return newStore(t, Config{Servers: []string{srv.Addr}, KeyPrefix: prefix, Timeout: 5 * time.Second})
	}, storetest.Options{
		RemainingTTL: func(_ sessioncache.Store, key string) (time.Duration, error) {
			return remainingTTL(srv.Addr, prefix+key)
		},
		// Whole seconds, rounded up, plus a second for memcached's clock,
		// which ticks once a second.
		TTLSlack: 2 * time.Second,
	})
}

func TestConformanceTwoServers(t *testing.T) {
	t.Parallel()
	a, b := testserver.Memcached(t), testserver.Memcached(t)
	storetest.Run(t, func(t *testing.T) sessioncache.Store {
		return newStore(t, Config{Servers: []string{a.Addr, b.Addr}, Timeout: 5 * time.Second, MaxIdleConns: 2})
	})
}

func TestExpiration(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		ttl  time.Duration
		want int32
	}{
		{time.Nanosecond, 1},
		{time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{1500 * time.Millisecond, 2},
		{24 * time.Hour, 86400},
		{30 * 24 * time.Hour, maxRelativeExpiration}, // the last relative value
		{30*24*time.Hour + time.Nanosecond, 1_700_000_000 + maxRelativeExpiration + 1}, // absolute, rounded up
		{40 * 24 * time.Hour, 1_700_000_000 + 40*86400},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			got, err := expiration(tt.ttl, now)
			if err != nil || got != tt.want {
				t.Errorf("expiration(%v) = (%d, %v), want %d", tt.ttl, got, err, tt.want)
			}
		})
	}
	// An absolute time is rounded up from a fractional now too.
	if got, _ := expiration(31*24*time.Hour, now.Add(time.Millisecond)); got != 1_700_000_000+31*86400+1 {
		t.Errorf("expiration(31d) at now+1ms = %d, want %d", got, 1_700_000_000+31*86400+1)
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Duration(math.MaxInt64)} {
		if got, err := expiration(ttl, now); err == nil {
			t.Errorf("expiration(%v) = %d, want an error", ttl, got)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	one := []string{"127.0.0.1:11211"}
	tests := []struct {
		name string
		cfg  Config
		want string // "" means valid
	}{
		{"single", Config{Servers: one}, ""},
		{"several_and_socket", Config{Servers: []string{"a:11211", "[::1]:11211", "/run/memcached.sock"}, Timeout: time.Second, MaxIdleConns: 4, KeyPrefix: "fleet/"}, ""},
		{"weighted", Config{Servers: []string{"a:1", "a:1", "b:1"}}, ""},
		{"none", Config{}, "memcached.servers: at least one server is required"},
		{"bad", Config{Servers: []string{"a:1", "x:y:z"}}, `memcached.servers[1]: "x:y:z": must be host:port`},
		{"no_host", Config{Servers: []string{":11211"}}, `memcached.servers[0]: ":11211": host is empty`},
		{"bad_port", Config{Servers: []string{"a:0"}}, `memcached.servers[0]: "a:0": port must be a number in 1..65535`},
		{"negative_timeout", Config{Servers: one, Timeout: -time.Millisecond}, `memcached.timeout: must not be negative, got "-1ms"`},
		{"negative_idle", Config{Servers: one, MaxIdleConns: -2}, "memcached.max_idle_conns: must not be negative, got -2"},
		{"prefix_control", Config{Servers: one, KeyPrefix: "a\nb"}, `memcached.key_prefix: "a\nb": must be shorter than 250 bytes with no spaces or control bytes`},
		{"prefix_too_long", Config{Servers: one, KeyPrefix: strings.Repeat("p", 250)}, `memcached.key_prefix: "` + strings.Repeat("p", 250) + `": must be shorter than 250 bytes with no spaces or control bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if err := tt.cfg.Validate(); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() = %q\nwant         %q", got, tt.want)
			}
		})
	}
}

func TestNewResolves(t *testing.T) {
	t.Parallel()
	// gomemcache.New would swallow this error until the first call.
	_, err := New(Config{Servers: []string{"127.0.0.1:11211", "host.invalid:11211"}})
	if err == nil || !strings.Contains(err.Error(), "memcached.servers: resolving: ") {
		t.Fatalf("New(unresolvable server) = %v, want a resolution error", err)
	}
}

func TestKeyPrefix(t *testing.T) {
	t.Parallel()
	srv := testserver.Memcached(t)
	s := newStore(t, Config{Servers: []string{srv.Addr}, KeyPrefix: "fleet-a/"})
	ctx := t.Context()
	if err := s.Put(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := remainingTTL(srv.Addr, "fleet-a/k"); err != nil {
		t.Errorf(`server has no "fleet-a/k": %v`, err)
	}
	long := strings.Repeat("k", sessioncache.MaxKeyLen-len("fleet-a/")+1)
	if err := s.Put(ctx, long, []byte("v"), time.Minute); err == nil {
		t.Error("Put(key too long once prefixed) = nil, want an error")
	}
}

// TestPool checks that a burst of concurrent calls leaves at most
// MaxIdleConns idle clients, and that Close empties the pool and fails
// later calls.
func TestPool(t *testing.T) {
	t.Parallel()
	srv := testserver.Memcached(t)
	s := newStore(t, Config{Servers: []string{srv.Addr}, MaxIdleConns: 3, Timeout: 5 * time.Second})
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			key := "k" + strconv.Itoa(i)
			if err := s.Put(ctx, key, []byte("v"), time.Minute); err != nil {
				t.Error(err)
			}
			if _, err := s.Get(ctx, key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s.mu.Lock()
	idle := len(s.free)
	s.mu.Unlock()
	if idle < 1 || idle > 3 {
		t.Errorf("idle clients = %d, want 1..3", idle)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "k0")
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v, want ErrClosed", err)
	}
	var se *Error
	if !errors.As(err, &se) || se.Addr != srv.Addr {
		t.Errorf("Get after Close = %v, want an *Error for %s", err, srv.Addr)
	}
}

// wantStoreError checks that err is a store failure for addr, not a miss.
func wantStoreError(t *testing.T, err error, addr string) *Error {
	t.Helper()
	if err == nil || errors.Is(err, sessioncache.ErrMiss) {
		t.Fatalf("err = %v, want a store error", err)
	}
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("err = %v (%T), want a *memcache.Error", err, err)
	}
	if se.Addr != addr {
		t.Errorf("Error.Addr = %q, want %q", se.Addr, addr)
	}
	return se
}

// eventually retries op until it succeeds. It polls a server process that
// is coming back up, not goroutines of this test; the wait is bounded.
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
	srv := testserver.Memcached(t)
	s := newStore(t, Config{Servers: []string{srv.Addr}, Timeout: 500 * time.Millisecond})
	ctx := t.Context()
	if err := s.Put(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// The first call finds the pooled connection dead, later ones are
	// refused at dial. Each must fail, none may miss.
	for i := range 3 {
		_, err := s.Get(ctx, "k")
		wantStoreError(t, err, srv.Addr)
		if i == 1 {
			t.Logf("Get with the server stopped: %v", err)
		}
	}
	wantStoreError(t, s.Put(ctx, "k", []byte("v"), time.Minute), srv.Addr)
	wantStoreError(t, s.Delete(ctx, "k"), srv.Addr)
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping with the server stopped = nil")
	}

	srv.Restart() // memcached forgets everything
	eventually(t, "Put after restart", func() error { return s.Put(ctx, "k", []byte("again"), time.Minute) })
	got, err := s.Get(ctx, "k")
	if err != nil || string(got) != "again" {
		t.Fatalf("Get after restart = (%q, %v), want \"again\"", got, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after restart = %v", err)
	}
}

func TestServerPaused(t *testing.T) {
	t.Parallel()
	srv := testserver.Memcached(t)
	s := newStore(t, Config{Servers: []string{srv.Addr}, Timeout: 300 * time.Millisecond})
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
	if se := wantStoreError(t, err, srv.Addr); !se.Timeout() {
		t.Errorf("Get on a paused server = %v, want a timeout", err)
	}

	// Bounded by ctx when its deadline is the sooner one.
	long := newStore(t, Config{Servers: []string{srv.Addr}, Timeout: time.Hour})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = long.Get(short, "k")
	se := wantStoreError(t, err, srv.Addr)
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

// sessionSize is a typical sealed session state.
const sessionSize = 512

func benchStore(b *testing.B) (*Store, []string) {
	srv := testserver.Memcached(b)
	s := newStore(b, Config{Servers: []string{srv.Addr}, Timeout: time.Second})
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
	s, keys := benchStore(b)
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

func BenchmarkPut(b *testing.B) {
	s, keys := benchStore(b)
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
	s, keys := benchStore(b)
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
