package stateful

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	memcachestore "github.com/edgeproxy/edgeproxy/sessioncache/memcache"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

// These tests run real handshakes against nodes sharing a real redis-server
// or memcached (internal/testserver), through the per-connection hooks
// edgeproxy's listener uses (node.connect), each connection followed by a
// flush of its node's commits: they are not about the commit window
// (TestCommitWindow is). Loopback.ConnectDone fails the test on any
// failed handshake, so every test here also asserts that none failed.

type storeKind struct {
	name, mode string
	start      func(testing.TB) (*testserver.Server, sessioncache.Store)
	// startTimeout starts a store client whose own per-call bound is
	// timeout (zero: the client's default).
	startTimeout func(tb testing.TB, timeout time.Duration) (*testserver.Server, sessioncache.Store)
}

var storeKinds = []storeKind{
	{"redis", resumption.ModeRedis, startRedis, startRedisTimeout},
	{"memcached", resumption.ModeMemcached, startMemcached, startMemcachedTimeout},
}

func startRedis(tb testing.TB) (*testserver.Server, sessioncache.Store) {
	tb.Helper()
	return startRedisTimeout(tb, 0)
}

func startRedisTimeout(tb testing.TB, timeout time.Duration) (*testserver.Server, sessioncache.Store) {
	tb.Helper()
	srv := testserver.Redis(tb)
	// The store client's own bound defaults to the Backend's longest, as
	// in the app.
	st, err := redisstore.New(redisstore.Config{Addrs: []string{srv.Addr}, Timeout: cmp.Or(timeout, Config{}.StoreCallBound())})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return srv, st
}

func startMemcached(tb testing.TB) (*testserver.Server, sessioncache.Store) {
	tb.Helper()
	return startMemcachedTimeout(tb, 0)
}

func startMemcachedTimeout(tb testing.TB, timeout time.Duration) (*testserver.Server, sessioncache.Store) {
	tb.Helper()
	srv := testserver.Memcached(tb)
	st, err := memcachestore.New(memcachestore.Config{Servers: []string{srv.Addr}, Timeout: cmp.Or(timeout, Config{}.StoreCallBound())})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return srv, st
}

// newFleet returns n nodes built on cfg, each with its own Backend and
// local cache.
func newFleet(tb testing.TB, n int, cfg Config, version uint16) []*node {
	tb.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = newNode(tb, cfg, version)
	}
	return nodes
}

func newClient(tb testing.TB, version uint16) *tls.Config {
	tb.Helper()
	return tlstest.ClientConfig(tb, version, tls.NewLRUClientSessionCache(4))
}

// connector runs connections and fails the test when one does not
// resume (or resumes) as expected.
type connector struct {
	tb testing.TB
	l  *tlstest.Loopback
}

func (c connector) expect(what string, cli *tls.Config, n *node, resume bool) {
	c.tb.Helper()
	if got := n.connect(c.tb, c.l, cli).DidResume; got != resume {
		c.tb.Fatalf("%s: DidResume = %v; want %v", what, got, resume)
	}
}

func TestFleetRoundRobin(t *testing.T) {
	t.Parallel()
	const reconnects = 100
	l := tlstest.NewLoopback(t)
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			_, store := kind.startTimeout(t, loadedCITimeout)
			for _, v := range tlstest.Versions {
				t.Run(v.Name, func(t *testing.T) {
					nodes := newFleet(t, 3, Config{Mode: kind.mode, Store: store, Prefix: v.Name + "/", Timeout: loadedCITimeout}, v.Version)
					cli := newClient(t, v.Version)
					if nodes[0].connect(t, l, cli).DidResume {
						t.Fatal("first connection resumed")
					}
					resumed := 0
					for i := range reconnects {
						if nodes[(i+1)%len(nodes)].connect(t, l, cli).DidResume {
							resumed++
						}
					}
					var failures float64
					for _, n := range nodes {
						for _, r := range []string{"error", "timeout"} {
							failures += n.metric(t, "edgeproxy_session_store_calls_total", "result", r)
						}
					}
					t.Logf("resumed %d of %d reconnects across 3 nodes; %v store errors", resumed, reconnects, failures)
					// Deterministic: every commit is flushed before the
					// next connection, and the timeout is generous.
					if resumed != reconnects {
						t.Fatalf("resumed %d of %d reconnects; want all", resumed, reconnects)
					}
				})
			}
		})
	}
}

// TestStoreKilled stops the store mid-run: nothing fails, clients
// resume on the node that issued their session, and once the store is back
// (empty) new sessions resume across nodes again, after the breakers'
// cooldown on the injected clock.
func TestStoreKilled(t *testing.T) {
	// Not parallel: it stops and restarts servers on their ports, which a
	// parallel test's new server could take meanwhile.
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	for _, kind := range storeKinds {
		for _, v := range tlstest.Versions {
			t.Run(kind.name+"/"+v.Name, func(t *testing.T) {
				c.tb = t
				srv, store := kind.startTimeout(t, loadedCITimeout)
				clk := storetest.NewClock(time.Now())
				// A stopped store refuses connections at once, so the breaker
				// steps do not depend on Timeout; a long one keeps the
				// healthy steps from missing on a loaded machine.
				nodes := newFleet(t, 3, Config{Mode: kind.mode, Store: store, Now: clk.Now, Timeout: loadedCITimeout}, v.Version)
				a, b := nodes[0], nodes[1]

				early := newClient(t, v.Version)
				c.expect("healthy, first", early, a, false)
				cross := newClient(t, v.Version)
				c.expect("healthy, first", cross, a, false)
				c.expect("healthy, cross-node", cross, b, true)

				srv.Stop()
				c.expect("store down, back to the issuing node", early, a, true)
				c.expect("store down, cross-node", early, b, false)
				c.expect("store down, back to the node of the last full handshake", early, b, true)
				if got := b.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultStoreError); got != 1 {
					t.Fatalf("B counted %v store errors; want 1 (the cross-node handshake)", got)
				}
				// Each node's breaker opens after 5 consecutive failures:
				// the first put, then a get per connection (and a put in
				// TLS 1.3; TLS 1.2 re-issues the handle).
				for i, n := range nodes {
					cli := newClient(t, v.Version)
					c.expect(fmt.Sprintf("store down, node %d first", i), cli, n, false)
					for range 4 {
						c.expect(fmt.Sprintf("store down, node %d again", i), cli, n, true)
					}
					if got := n.metric(t, "edgeproxy_session_store_breaker_open"); got != 1 {
						t.Fatalf("node %d: breaker_open = %v; want 1", i, got)
					}
				}
				skipped := b.metric(t, "edgeproxy_session_store_calls_total", "op", "get", "result", "skipped")
				c.expect("breaker open, back to the issuing node", early, b, true)
				if b.metric(t, "edgeproxy_session_store_calls_total", "op", "get", "result", "skipped") != skipped+1 {
					t.Fatal("the open breaker did not skip the store")
				}

				srv.Restart()
				clk.Advance(DefaultBreakerCooldown)
				fresh := newClient(t, v.Version)
				c.expect("store back, first", fresh, a, false)
				for i, n := range nodes[1:] {
					c.expect(fmt.Sprintf("store back, cross-node %d", i+1), fresh, n, true)
				}
				for i, n := range nodes {
					if got := n.metric(t, "edgeproxy_session_store_breaker_open"); got != 0 {
						t.Fatalf("node %d: breaker_open = %v after recovery; want 0", i, got)
					}
				}
			})
		}
	}
}

// TestStoreHung pauses the store (SIGSTOP): handshakes still complete,
// bounded by the per-call timeout, and resume on the issuing node. The
// store clients' own bound is 10s, so that only the Backend's Timeout can
// keep a connection short.
func TestStoreHung(t *testing.T) {
	// Not parallel: its healthy steps run under a short store timeout,
	// which the load of other tests could exceed.
	const timeout = 10 * time.Millisecond
	// A bound on a timeout, not a latency: a hung-store connection waits
	// for one store call of at most the per-call bound (its ceiling,
	// StoreCallBound; the commit does not wait once the get found the
	// store failing), so 10x leaves room for a loaded scheduler; with the
	// timeout not applied it takes the store client's 10s.
	bound := 10 * Config{Timeout: timeout}.StoreCallBound()
	l := tlstest.NewLoopback(t)
	for _, kind := range storeKinds {
		for _, v := range tlstest.Versions {
			t.Run(kind.name+"/"+v.Name, func(t *testing.T) {
				srv, store := kind.startTimeout(t, 10*time.Second)
				nodes := newFleet(t, 2, Config{Mode: kind.mode, Store: store, Timeout: timeout}, v.Version)
				a, b := nodes[0], nodes[1]
				cli := newClient(t, v.Version)
				// timed runs one connection and returns how long its
				// handshakes took; the commit is flushed after.
				timed := func(what string, n *node, resume bool) time.Duration {
					t.Helper()
					c, done := n.conn()
					start := time.Now()
					cs := l.ConnectDone(t, cli, c, done)
					elapsed := time.Since(start)
					if cs.DidResume != resume {
						t.Fatalf("%s: DidResume = %v; want %v", what, cs.DidResume, resume)
					}
					n.flush(t)
					return elapsed
				}
				timed("healthy, first", a, false)
				healthy := timed("healthy, same node", a, true)

				srv.Pause()
				defer srv.Resume()
				hung := map[string]time.Duration{}
				hung["same node"] = timed("store hung, same node", a, true)
				hung["cross-node"] = timed("store hung, cross-node", b, false)
				// Timeouts open B's breaker once they are half of its
				// window (#12).
				for i := 0; b.metric(t, "edgeproxy_session_store_breaker_open") == 0; i++ {
					if i == breakerWindow {
						t.Fatalf("B's breaker still closed after %d connections to a hung store", i)
					}
					if d := timed("store hung, same node", b, true); d > hung["until the breaker opens"] {
						hung["until the breaker opens"] = d
					}
				}
				hung["breaker open"] = timed("store hung, breaker open", b, true)
				if got := b.metric(t, "edgeproxy_session_store_calls_total", "result", "timeout"); got < 1 {
					t.Fatalf("B counted %v store timeouts; want some", got)
				}
				t.Logf("connection time: healthy %v; store hung: %v (timeout %v, per-call bound up to %v)", healthy.Round(time.Microsecond), hung, timeout, bound/10)
				for what, d := range hung {
					if d >= bound {
						t.Errorf("store hung, %s: the connection took %v; want under %v (10x the per-call bound)", what, d, bound)
					}
				}
			})
		}
	}
}

// capture is a resumption.Backend that records what Backend was given and
// what it returned.
type capture struct {
	*Backend

	// mu protects states and handles.
	mu      sync.Mutex
	states  [][]byte
	handles [][]byte
}

// WrapSessionID is the method the Layer calls on a resumption.SessionIDer.
func (c *capture) WrapSessionID(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, string, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, "", err
	}
	h, id, err := c.Backend.WrapSessionID(cs, ss)
	c.mu.Lock()
	c.states = append(c.states, state)
	c.handles = append(c.handles, h)
	c.mu.Unlock()
	return h, id, err
}

// TestRedisValueOpaque reads what Redis holds with a Redis client
// of its own: neither the state nor its secret, and a key that is not the id.
func TestRedisValueOpaque(t *testing.T) {
	t.Parallel()
	srv, store := startRedisTimeout(t, loadedCITimeout)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	l := tlstest.NewLoopback(t)
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			s, err := New(Config{Mode: resumption.ModeRedis, Store: store, Timeout: loadedCITimeout})
			if err != nil {
				t.Fatal(err)
			}
			capture := &capture{Backend: s}
			layer, err := resumption.New(resumption.Config{Mode: resumption.ModeRedis, Backend: capture})
			if err != nil {
				t.Fatal(err)
			}
			srvCfg := &tls.Config{Certificates: []tls.Certificate{tlstest.Cert(t)}, MinVersion: v.Version, MaxVersion: v.Version}
			layer.Configure(srvCfg)
			var keyLog bytes.Buffer
			cli := newClient(t, v.Version)
			cli.KeyLogWriter = &keyLog
			l.Connect(t, cli, srvCfg)

			capture.mu.Lock()
			state, h := capture.states[0], capture.handles[0]
			capture.mu.Unlock()
			secret := testSecret(t, state)
			if v.Version == tls.VersionTLS12 {
				// Check testSecret against the key log: for TLS 1.2 the
				// session secret is the master secret.
				if !strings.Contains(keyLog.String(), " "+hex.EncodeToString(secret)) {
					t.Fatal("the parsed secret is not the connection's master secret")
				}
			}
			sid, err := hex.DecodeString(s.SessionID(h))
			if err != nil {
				t.Fatal(err)
			}
			key := sessioncache.SessionKey("", sid)
			val, err := rdb.Get(context.Background(), key).Bytes()
			if err != nil {
				t.Fatalf("reading %s from Redis: %v", key, err)
			}
			if bytes.Contains(val, state) || bytes.Contains(val, secret) || bytes.Contains(val, state[len(state)/2:]) {
				t.Fatal("Redis holds the session state or its secret in the clear")
			}
			if bytes.Contains(h, secret) {
				t.Fatal("the handle holds the secret")
			}
			keys, err := rdb.Keys(context.Background(), "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if strings.Contains(k, hex.EncodeToString(h[:16])) || strings.Contains(k, hex.EncodeToString(h[16:])) {
					t.Fatalf("store key %q holds part of the handle", k)
				}
			}
		})
	}
}

func TestRevokeHandshake(t *testing.T) {
	t.Parallel()
	_, store := startRedisTimeout(t, loadedCITimeout)
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			c.tb = t
			nodes := newFleet(t, 2, Config{Mode: resumption.ModeRedis, Store: store, Timeout: loadedCITimeout}, v.Version)
			a, b := nodes[0], nodes[1]
			cache := tlstest.NewRecordingCache()
			cli := tlstest.ClientConfig(t, v.Version, cache)
			c.expect("first", cli, a, false)
			_, _, h := cache.Last(t)
			// An operator revokes on B the session A issued.
			if err := b.s.Revoke(context.Background(), a.s.SessionID(h)); err != nil {
				t.Fatal(err)
			}
			c.expect("after Revoke, issuing node", cli, a, false)
			c.expect("after Revoke, a new session", cli, b, true)
		})
	}
}

func TestSingleUseHandshake(t *testing.T) {
	t.Parallel()
	_, store := startMemcachedTimeout(t, loadedCITimeout)
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			c.tb = t
			nodes := newFleet(t, 2, Config{Mode: resumption.ModeMemcached, Store: store, SingleUse: true, Timeout: loadedCITimeout}, v.Version)
			a, b := nodes[0], nodes[1]
			cache := tlstest.NewRecordingCache()
			cli := tlstest.ClientConfig(t, v.Version, cache)
			c.expect("first", cli, a, false)
			cacheKey, first, _ := cache.Last(t)
			c.expect("first use", cli, b, true)
			cache.Put(cacheKey, first) // replay the used ticket
			c.expect("second use of the same ticket", cli, a, false)
			if got := a.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultMiss); got < 1 {
				t.Fatalf("A counted %v misses; want the replay", got)
			}
			c.expect("the fresh ticket", cli, b, true)
		})
	}
}

func TestStickyHandshake(t *testing.T) {
	t.Parallel()
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			c.tb = t
			nodes := newFleet(t, 2, Config{}, v.Version)
			a, b := nodes[0], nodes[1]
			cli := newClient(t, v.Version)
			c.expect("first", cli, a, false)
			c.expect("same node", cli, a, true)
			c.expect("other node", cli, b, false)
			c.expect("back on the other node", cli, b, true)
			if got := a.metric(t, "edgeproxy_session_store_calls_total", "mode", resumption.ModeSticky, "op", "get", "result", "ok"); got != 1 {
				t.Fatalf("A counted %v local gets; want 1", got)
			}
			// The resumption issued a second session in TLS 1.3; in TLS 1.2
			// it re-issued the first (Conn).
			want := 2.0
			if v.Version == tls.VersionTLS12 {
				want = 1
			}
			if got := a.metric(t, "edgeproxy_session_local_entries", "mode", resumption.ModeSticky); got != want {
				t.Fatalf("A holds %v sessions; want %v", got, want)
			}
		})
	}
}

// loadedCITimeout replaces the 25ms default in tests whose subject is not
// the timeout: on a loaded 2-core CI machine scheduling delay alone can pass
// 25ms, and a timed-out store call falls back to the local copy, which
// would make a sharing, revocation or single-use assertion fail for the
// wrong reason.
const loadedCITimeout = time.Second
