package memcache

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	gomemcache "github.com/bradfitz/gomemcache/memcache"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// TestServerRemovedLosesItsShareOnly writes sessions through a store on
// three real memcached servers, then reads them through stores that list
// one server fewer (or one more): only the sessions of the removed server
// (about 1/3), or those the new server takes over (about 1/4), may be lost.
// With gomemcache's modulo selector about 2/3 were lost (#12).
func TestServerRemovedLosesItsShareOnly(t *testing.T) {
	t.Parallel()
	var addrs []string
	for range 4 {
		addrs = append(addrs, testserver.Memcached(t).Addr)
	}
	cfg := func(servers ...string) Config {
		return Config{Servers: servers, KeyPrefix: prefix, Timeout: 5 * time.Second}
	}
	ctx := context.Background()
	const n = 3000
	keys := make([]string, n)
	full := newStore(t, cfg(addrs[:3]...))
	for i := range keys {
		keys[i] = sessioncache.SessionKey("", []byte(rand.Text()))
		if err := full.Put(ctx, keys[i], []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	lost := func(s *Store) float64 {
		t.Helper()
		missed := 0
		for _, k := range keys {
			_, err := s.Get(ctx, k)
			switch {
			case errors.Is(err, sessioncache.ErrMiss):
				missed++
			case err != nil:
				t.Fatal(err)
			}
		}
		return float64(missed) / n
	}
	check := func(name string, got, want float64) {
		t.Helper()
		t.Logf("%s: %.1f%% of sessions lost, ideal %.1f%%", name, 100*got, 100*want)
		if math.Abs(got-want) > 0.05 {
			t.Errorf("%s: lost %.1f%% of sessions, want %.1f%% ± 5 points", name, 100*got, 100*want)
		}
	}
	if got := lost(full); got != 0 {
		t.Fatalf("lost %.1f%% of sessions with no server removed", 100*got)
	}
	for i := range 3 {
		var rest []string
		for j, a := range addrs[:3] {
			if j != i {
				rest = append(rest, a)
			}
		}
		check(fmt.Sprintf("server %d of 3 removed", i), lost(newStore(t, cfg(rest...))), 1.0/3)
	}
	check("fourth server added", lost(newStore(t, cfg(addrs...))), 1.0/4)
}

// TestRendezvous checks the selector on many keys without servers: shares
// are even, removing a server moves exactly the keys it held, the order of
// the list does not matter, and a server listed twice gets twice the share.
func TestRendezvous(t *testing.T) {
	t.Parallel()
	const n = 20000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = sessioncache.SessionKey(prefix, []byte(rand.Text()))
	}
	pick := func(r *rendezvous) []string {
		t.Helper()
		out := make([]string, n)
		for i, k := range keys {
			a, err := r.PickServer(k)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = a.String()
		}
		return out
	}
	build := func(servers ...string) *rendezvous {
		t.Helper()
		r, err := newRendezvous(servers...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var servers []string
	for i := range 8 {
		servers = append(servers, fmt.Sprintf("127.0.0.1:%d", 11211+i))
	}
	for size := 2; size <= len(servers); size++ {
		list := servers[:size]
		all := pick(build(list...))
		share := map[string]int{}
		for _, a := range all {
			share[a]++
		}
		for _, s := range list {
			if got, want := float64(share[s])/n, 1/float64(size); math.Abs(got-want) > 0.02 {
				t.Errorf("%d servers: %s holds %.1f%% of keys, want %.1f%% ± 2 points", size, s, 100*got, 100*want)
			}
		}
		for i, gone := range list {
			rest := append(append([]string(nil), list[:i]...), list[i+1:]...)
			for j, a := range pick(build(rest...)) {
				if moved := a != all[j]; moved != (all[j] == gone) {
					t.Fatalf("%d servers, %s removed: key %q moved from %s to %s", size, gone, keys[j], all[j], a)
				}
			}
		}
	}
	fwd, rev := pick(build(servers[0], servers[1], servers[2])), pick(build(servers[2], servers[0], servers[1]))
	for i := range fwd {
		if fwd[i] != rev[i] {
			t.Fatalf("key %q maps to %s or %s depending on list order", keys[i], fwd[i], rev[i])
		}
	}
	share := map[string]int{}
	for _, a := range pick(build(servers[0], servers[1], servers[0])) {
		share[a]++
	}
	if got := float64(share[servers[0]]) / n; math.Abs(got-2.0/3) > 0.02 {
		t.Errorf("a server listed twice of three holds %.1f%% of keys, want 66.7%% ± 2 points", 100*got)
	}
	if _, err := (&rendezvous{}).PickServer("k"); !errors.Is(err, gomemcache.ErrNoServers) {
		t.Errorf("PickServer with no servers: %v, want ErrNoServers", err)
	}
}

func BenchmarkPickServer(b *testing.B) {
	r, err := newRendezvous("127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213")
	if err != nil {
		b.Fatal(err)
	}
	key := sessioncache.SessionKey(prefix, make([]byte, 16))
	for b.Loop() {
		if _, err := r.PickServer(key); err != nil {
			b.Fatal(err)
		}
	}
}
