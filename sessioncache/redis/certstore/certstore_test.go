package certstore

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

// newStorage returns a Storage on addr, closed when t ends.
func newStorage(t *testing.T, addr string, ttl time.Duration) *Storage {
	t.Helper()
	s, err := New(Config{
		Redis:        redisstore.Config{Addrs: []string{addr}, KeyPrefix: "t/"},
		LockTTL:      ttl,
		PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStorageContract(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	s := newStorage(t, srv.Addr, 0)
	ctx := t.Context()

	files := map[string]string{
		"certificates/ca/a.example/a.example.crt":   "cert-a",
		"certificates/ca/a.example/a.example.key":   "key-a",
		"certificates/ca/b.example/b.example.crt":   "cert-b",
		"certificates/ca-b/c.example/c.example.crt": "cert-c",
		"acme/ca/users/x/x.json":                    "{}",
		"last_clean.json":                           "",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("load", func(t *testing.T) {
		for k, v := range files {
			got, err := s.Load(ctx, k)
			if err != nil || string(got) != v {
				t.Errorf("Load(%q) = %q, %v; want %q", k, got, err, v)
			}
		}
		if _, err := s.Load(ctx, "certificates/ca"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(directory) error = %v, want fs.ErrNotExist", err)
		}
		if _, err := s.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(missing) error = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("overwrite", func(t *testing.T) {
		if err := s.Store(ctx, "ow", []byte("1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Store(ctx, "ow", []byte("22")); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Load(ctx, "ow")
		if string(got) != "22" {
			t.Errorf("after overwrite Load = %q, want 22", got)
		}
	})
	t.Run("exists", func(t *testing.T) {
		for k, want := range map[string]bool{
			"certificates": true, "certificates/ca": true, "certificates/ca/a.example/a.example.crt": true,
			"certificates/c": false, "certificates/ca/a.example/a.example": false, "zzz": false,
		} {
			if got := s.Exists(ctx, k); got != want {
				t.Errorf("Exists(%q) = %v, want %v", k, got, want)
			}
		}
	})
	t.Run("stat", func(t *testing.T) {
		before := time.Now().Add(-time.Minute)
		ki, err := s.Stat(ctx, "certificates/ca/a.example/a.example.crt")
		if err != nil || !ki.IsTerminal || ki.Size != int64(len("cert-a")) || ki.Modified.Before(before) {
			t.Errorf("Stat(file) = %+v, %v", ki, err)
		}
		ki, err = s.Stat(ctx, "certificates/ca")
		if err != nil || ki.IsTerminal || ki.Key != "certificates/ca" {
			t.Errorf("Stat(dir) = %+v, %v", ki, err)
		}
		if _, err := s.Stat(ctx, "certificates/c"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(missing) error = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("list", func(t *testing.T) {
		for _, tt := range []struct {
			dir       string
			recursive bool
			want      []string
		}{
			{"certificates", false, []string{"certificates/ca", "certificates/ca-b"}},
			{"certificates/ca", false, []string{"certificates/ca/a.example", "certificates/ca/b.example"}},
			{"certificates/ca", true, []string{
				"certificates/ca/a.example", "certificates/ca/a.example/a.example.crt", "certificates/ca/a.example/a.example.key",
				"certificates/ca/b.example", "certificates/ca/b.example/b.example.crt",
			}},
			{"acme", true, []string{"acme/ca", "acme/ca/users", "acme/ca/users/x", "acme/ca/users/x/x.json"}},
		} {
			got, err := s.List(ctx, tt.dir, tt.recursive)
			slices.Sort(got)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("List(%q, %v) = %q, %v; want %q", tt.dir, tt.recursive, got, err, tt.want)
			}
		}
		if _, err := s.List(ctx, "certificates/c", false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("List(missing) error = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := s.Delete(ctx, "certificates/ca/a.example/a.example.key"); err != nil {
			t.Fatal(err)
		}
		if s.Exists(ctx, "certificates/ca/a.example/a.example.key") || !s.Exists(ctx, "certificates/ca/a.example") {
			t.Error("deleting a file removed too little or too much")
		}
		if err := s.Delete(ctx, "certificates/ca"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"certificates/ca", "certificates/ca/a.example/a.example.crt", "certificates/ca/b.example"} {
			if s.Exists(ctx, k) {
				t.Errorf("%q exists after deleting its directory", k)
			}
		}
		if !s.Exists(ctx, "certificates/ca-b/c.example/c.example.crt") {
			t.Error("deleting certificates/ca removed its sibling certificates/ca-b")
		}
		if err := s.Delete(ctx, "never/there"); err != nil {
			t.Errorf("Delete(missing) = %v, want nil", err)
		}
	})
}

func TestLockExclusive(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	a, b := newStorage(t, srv.Addr, 0), newStorage(t, srv.Addr, 0)
	ctx := t.Context()
	if err := a.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_x"); ok || err != nil {
		t.Fatalf("second storage TryLock = %v, %v while the first holds it", ok, err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_y"); !ok || err != nil {
		t.Fatalf("TryLock of another name = %v, %v", ok, err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_x") }()
	select {
	case err := <-got:
		t.Fatalf("Lock returned %v while the other storage holds the lock", err)
	default:
	}
	if err := a.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	if ok, _ := a.TryLock(ctx, "issue_cert_x"); ok {
		t.Fatal("first storage took the lock back while the second holds it")
	}
	if err := b.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
}

func TestLockWaitHonoursContext(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	a, b := newStorage(t, srv.Addr, 0), newStorage(t, srv.Addr, 0)
	if err := a.Lock(t.Context(), "l"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Lock(ctx, "l"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a cancelled ctx = %v, want context.Canceled", err)
	}
}

// A live holder's lock outlives its TTL: the keepalive extends it.
func TestLockKeptAlive(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	const ttl = time.Second
	a, b := newStorage(t, srv.Addr, ttl), newStorage(t, srv.Addr, ttl)
	if err := a.Lock(t.Context(), "l"); err != nil {
		t.Fatal(err)
	}
	// Not a timing assertion on the holder: whatever the scheduling, b must
	// not get a lock whose holder is alive. 3×TTL bounds the wait.
	ctx, cancel := context.WithTimeout(t.Context(), 3*ttl)
	defer cancel()
	if err := b.Lock(ctx, "l"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a kept-alive lock = %v, want to keep waiting", err)
	}
}

// A holder that dies (its keepalive gone with it) loses the lock after the
// TTL, and the next node gets it.
func TestLockExpiresAfterHolderDies(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	const ttl = 300 * time.Millisecond
	a, b := newStorage(t, srv.Addr, ttl), newStorage(t, srv.Addr, ttl)
	if err := a.Lock(t.Context(), "l"); err != nil {
		t.Fatal(err)
	}
	a.Close() // killed: no keepalive, no unlock
	if n, err := b.client.Exists(t.Context(), b.lockKey("l")).Result(); err != nil || n != 1 {
		t.Fatalf("lock key after the holder died: exists=%d, %v; want still held until expiry", n, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*ttl)
	defer cancel()
	if err := b.Lock(ctx, "l"); err != nil {
		t.Fatalf("Lock after the holder died: %v", err)
	}
}

// Unlock by anyone but the holder deletes nothing: not by a storage that
// never took the lock, and not by a former holder whose lock expired and
// was taken over.
func TestUnlockByNonOwnerRefused(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	const ttl = 300 * time.Millisecond
	a, b, c := newStorage(t, srv.Addr, ttl), newStorage(t, srv.Addr, ttl), newStorage(t, srv.Addr, ttl)
	ctx := t.Context()
	if err := a.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "l"); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Unlock by a storage that never locked = %v, want ErrNotOwner", err)
	}
	if ok, _ := c.TryLock(ctx, "l"); ok {
		t.Fatal("lock released by a non-owner's Unlock")
	}

	// a hangs: its keepalive stops, but it still has its token.
	stale := a.take("l")
	wctx, cancel := context.WithTimeout(ctx, 20*ttl)
	defer cancel()
	if err := b.Lock(wctx, "l"); err != nil {
		t.Fatalf("Lock after a's lock expired: %v", err)
	}
	// a wakes up and releases "its" lock with the stale token.
	done := make(chan struct{})
	close(done)
	a.mu.Lock()
	a.held["l"] = &heldLock{token: stale.token, stop: make(chan struct{}), done: done}
	a.mu.Unlock()
	if err := a.Unlock(ctx, "l"); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Unlock with an expired token = %v, want ErrNotOwner", err)
	}
	if ok, _ := c.TryLock(ctx, "l"); ok {
		t.Fatal("a former holder's Unlock released the new holder's lock")
	}
	if err := b.Unlock(ctx, "l"); err != nil {
		t.Fatalf("Unlock by the holder: %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "redis.addrs: at least one address is required"},
		{Config{Redis: redisstore.Config{Addrs: []string{"h:1"}}, LockTTL: -1}, `redis.lock_ttl: must not be negative, got "-1ns"`},
		{Config{Redis: redisstore.Config{Addrs: []string{"h:1"}}, LockTTL: time.Millisecond}, `redis.lock_ttl: "1ms" is too short to be kept alive; use at least 30ms`},
	} {
		if err := tt.cfg.Validate(); err == nil || err.Error() != tt.want {
			t.Errorf("Validate(%+v) = %v, want %s", tt.cfg, err, tt.want)
		}
	}
}
