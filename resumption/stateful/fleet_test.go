package stateful

import (
	"bytes"
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
// or memcached (internal/testserver). loopback.connect fails the test on any
// failed handshake, so every test here also asserts that none failed.

type storeKind struct {
	name, mode string
	start      func(testing.TB) (*testserver.Server, sessioncache.Store)
}

var storeKinds = []storeKind{
	{"redis", resumption.ModeRedis, startRedis},
	{"memcached", resumption.ModeMemcached, startMemcached},
}

func startRedis(tb testing.TB) (*testserver.Server, sessioncache.Store) {
	tb.Helper()
	srv := testserver.Redis(tb)
	// The store client's own bound is the Backend's longest, as in the app.
	st, err := redisstore.New(redisstore.Config{Addrs: []string{srv.Addr}, Timeout: Config{}.StoreCallBound()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return srv, st
}

func startMemcached(tb testing.TB) (*testserver.Server, sessioncache.Store) {
	tb.Helper()
	srv := testserver.Memcached(tb)
	st, err := memcachestore.New(memcachestore.Config{Servers: []string{srv.Addr}, Timeout: Config{}.StoreCallBound()})
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
	if got := c.l.Connect(c.tb, cli, n.tls).DidResume; got != resume {
		c.tb.Fatalf("%s: DidResume = %v; want %v", what, got, resume)
	}
}

func TestFleetRoundRobin(t *testing.T) {
	t.Parallel()
	const reconnects = 100
	l := tlstest.NewLoopback(t)
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			_, store := kind.start(t)
			for _, v := range tlstest.Versions {
				t.Run(v.Name, func(t *testing.T) {
					nodes := newFleet(t, 3, Config{Mode: kind.mode, Store: store, Prefix: v.Name + "/", Timeout: loadedCITimeout}, v.Version)
					cli := newClient(t, v.Version)
					if l.Connect(t, cli, nodes[0].tls).DidResume {
						t.Fatal("first connection resumed")
					}
					resumed := 0
					for i := range reconnects {
						if l.Connect(t, cli, nodes[(i+1)%len(nodes)].tls).DidResume {
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
					if resumed*100 < reconnects*99 {
						t.Fatalf("resumed %d of %d reconnects; want at least 99%%", resumed, reconnects)
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
				srv, store := kind.start(t)
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
				// Each node's breaker opens after 5 consecutive failures.
				for i, n := range nodes {
					cli := newClient(t, v.Version)
					c.expect(fmt.Sprintf("store down, node %d first", i), cli, n, false)
					for range 3 {
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

// TestStoreHung pauses the store (SIGSTOP): handshakes still
// complete within the per-call timeout, and resume on the issuing node.
func TestStoreHung(t *testing.T) {
	// Not parallel: its healthy steps run under a short store timeout,
	// which the load of other tests could exceed.
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	for _, kind := range storeKinds {
		for _, v := range tlstest.Versions {
			t.Run(kind.name+"/"+v.Name, func(t *testing.T) {
				c.tb = t
				srv, store := kind.start(t)
				// A short Timeout: the hung calls wait for up to 10 of them
				// each (see latency) until B's breaker opens.
				nodes := newFleet(t, 2, Config{Mode: kind.mode, Store: store, Timeout: 10 * time.Millisecond}, v.Version)
				a, b := nodes[0], nodes[1]
				cli := newClient(t, v.Version)
				c.expect("healthy, first", cli, a, false)
				start := time.Now()
				c.expect("healthy, same node", cli, a, true)
				healthy := time.Since(start)

				srv.Pause()
				defer srv.Resume()
				start = time.Now()
				c.expect("store hung, same node", cli, a, true)
				same := time.Since(start)
				start = time.Now()
				c.expect("store hung, cross-node", cli, b, false)
				cross := time.Since(start)
				// Timeouts open B's breaker once they are half of its window
				// (#12): a get and a put per connection.
				for i := 0; b.metric(t, "edgeproxy_session_store_breaker_open") == 0; i++ {
					if i == breakerWindow {
						t.Fatalf("B's breaker still closed after %d connections to a hung store", i)
					}
					c.expect("store hung, same node", cli, b, true)
				}
				start = time.Now()
				c.expect("store hung, breaker open", cli, b, true)
				open := time.Since(start)
				if got := b.metric(t, "edgeproxy_session_store_calls_total", "result", "timeout"); got < 1 {
					t.Fatalf("B counted %v store timeouts; want some", got)
				}
				if got := b.metric(t, "edgeproxy_session_store_breaker_open"); got != 1 {
					t.Fatalf("B: breaker_open = %v; want 1", got)
				}
				t.Logf("connection time: healthy %v; store hung: same node %v, cross-node %v, breaker open %v (timeout %v to %v per call)",
					healthy.Round(time.Microsecond), same.Round(time.Microsecond), cross.Round(time.Microsecond), open.Round(time.Microsecond), 10*time.Millisecond, Config{Timeout: 10 * time.Millisecond}.StoreCallBound())
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
	srv, store := startRedis(t)
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
	_, store := startRedis(t)
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
	_, store := startMemcached(t)
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
			if got := a.metric(t, "edgeproxy_session_local_entries", "mode", resumption.ModeSticky); got != 2 {
				t.Fatalf("A holds %v sessions; want 2", got)
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
