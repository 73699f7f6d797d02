package stateful

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

// testPoll is the tests' RevocationPoll: long enough that a busy machine
// does not let a node's poll go stale (2 × testPoll) between two steps.
const testPoll = time.Second

// waitEpoch waits until n's read-through epoch is above than: a poll saw
// the generation change, or failed.
func waitEpoch(tb testing.TB, n *node, than uint64) {
	tb.Helper()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	for {
		ch := n.s.rev.next()
		if n.s.rev.current() > than {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			tb.Fatalf("epoch still %d after 30s", n.s.rev.current())
		}
	}
}

// waitPolled waits for n's first poll: sessions committed before it are
// verified in an epoch that poll ends.
func waitPolled(tb testing.TB, n *node) {
	tb.Helper()
	waitEpoch(tb, n, 1)
}

// storeGets returns the gets n sent to the store, and those Local answered
// instead (read-through).
func storeGets(tb testing.TB, n *node) (sent, local float64) {
	tb.Helper()
	all := n.metric(tb, "edgeproxy_session_store_calls_total", "op", "get")
	local = n.metric(tb, "edgeproxy_session_store_calls_total", "op", "get", "result", "local")
	skipped := n.metric(tb, "edgeproxy_session_store_calls_total", "op", "get", "result", "skipped")
	return all - local - skipped, local
}

// TestReadThrough: a client returning to the node that last served its
// session resumes without a store get; revoked through another node, it no
// longer resumes there once that node polled the new generation.
func TestReadThrough(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		_, store := kind.startTimeout(t, loadedCITimeout)
		for _, v := range tlstest.Versions {
			t.Run(kind.name+"/"+v.Name, func(t *testing.T) {
				t.Parallel()
				c := connector{tb: t, l: tlstest.NewLoopback(t)}
				cfg := Config{Mode: kind.mode, Store: store, Timeout: loadedCITimeout, ReadThrough: true, RevocationPoll: testPoll}
				nodes := newFleet(t, 2, cfg, v.Version)
				a, b := nodes[0], nodes[1]
				waitPolled(t, a)
				cache := tlstest.NewRecordingCache()
				cli := tlstest.ClientConfig(t, v.Version, cache)
				c.expect("first", cli, a, false)

				sent, _ := storeGets(t, a)
				for i := range 2 {
					c.expect("back to the same node", cli, a, true)
					gotSent, gotLocal := storeGets(t, a)
					if gotSent != sent || gotLocal != float64(i+1) {
						t.Fatalf("return %d: %v store gets (want %v), %v local (want %d)", i+1, gotSent, sent, gotLocal, i+1)
					}
				}

				// Revoke, through B, the session the client holds now.
				_, _, h := cache.Last(t)
				epoch := a.s.rev.current()
				if err := b.s.Revoke(context.Background(), a.s.SessionID(h)); err != nil {
					t.Fatal(err)
				}
				waitEpoch(t, a, epoch)
				c.expect("revoked, back to the node holding a copy", cli, a, false)
				if _, local := storeGets(t, a); local != 2 {
					t.Fatalf("%v local gets after revocation; want still 2", local)
				}
			})
		}
	}
}

// TestReadThroughSingleUse: with SingleUse nothing reads through; every
// resumption is consumed in the store.
func TestReadThroughSingleUse(t *testing.T) {
	t.Parallel()
	_, store := startRedisTimeout(t, loadedCITimeout)
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			c := connector{tb: t, l: tlstest.NewLoopback(t)}
			a := newNode(t, Config{Mode: resumption.ModeRedis, Store: store, Timeout: loadedCITimeout, SingleUse: true, ReadThrough: true}, v.Version)
			if a.s.rev != nil {
				t.Fatal("a SingleUse backend polls the revocation generation")
			}
			cache := tlstest.NewRecordingCache()
			cli := tlstest.ClientConfig(t, v.Version, cache)
			c.expect("first", cli, a, false)
			cacheKey, first, _ := cache.Last(t)
			c.expect("back to the same node", cli, a, true)
			if got := a.metric(t, "edgeproxy_session_store_calls_total", "op", "delete", "result", "ok"); got != 1 {
				t.Fatalf("%v store deletes; want 1 (the consumption)", got)
			}
			if _, local := storeGets(t, a); local != 0 {
				t.Fatalf("%v local gets; want 0", local)
			}
			cache.Put(cacheKey, first) // replay the used ticket
			c.expect("used ticket, same node", cli, a, false)
		})
	}
}

// TestReadThroughStoreDown: a failed poll stops read-through at once, so a
// node that cannot read the generation cannot miss a revocation; its
// clients resume from Local only as degraded mode allows, through a failed
// store get.
func TestReadThroughStoreDown(t *testing.T) {
	// Not parallel: it stops a server on its port (see TestStoreKilled).
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			srv, store := kind.startTimeout(t, loadedCITimeout)
			c := connector{tb: t, l: tlstest.NewLoopback(t)}
			a := newNode(t, Config{Mode: kind.mode, Store: store, Timeout: loadedCITimeout, ReadThrough: true, RevocationPoll: testPoll}, tlstest.Versions[0].Version)
			waitPolled(t, a)
			cli := newClient(t, tlstest.Versions[0].Version)
			c.expect("first", cli, a, false)
			c.expect("back to the same node", cli, a, true)
			if _, local := storeGets(t, a); local != 1 {
				t.Fatalf("%v local gets; want 1", local)
			}

			epoch := a.s.rev.current()
			srv.Stop()
			waitEpoch(t, a, epoch)
			sent, _ := storeGets(t, a)
			c.expect("store down, same node (degraded)", cli, a, true)
			gotSent, local := storeGets(t, a)
			if local != 1 || gotSent != sent+1 {
				t.Fatalf("store down: %v store gets (want %v), %v local (want 1)", gotSent, sent+1, local)
			}
			if got := a.metric(t, "edgeproxy_session_local_fallback_total", "result", "hit"); got != 1 {
				t.Fatalf("%v degraded hits; want 1", got)
			}
		})
	}
}

// TestReadThroughStalePoll: without a successful poll for 2 ×
// RevocationPoll (a poll that hangs, or a poller not run), nothing reads
// through, even in the current epoch.
func TestReadThroughStalePoll(t *testing.T) {
	t.Parallel()
	_, store := startRedis(t)
	clk := storetest.NewClock(time.Now())
	a := newNode(t, Config{Mode: resumption.ModeRedis, Store: store, Now: clk.Now, ReadThrough: true, RevocationPoll: time.Hour}, tls.VersionTLS13)
	waitPolled(t, a)
	epoch := a.s.rev.current()
	if !a.s.rev.usable(epoch) {
		t.Fatal("not usable right after a poll")
	}
	if a.s.rev.usable(epoch - 1) {
		t.Fatal("an older epoch is usable")
	}
	clk.Advance(2 * time.Hour)
	if a.s.rev.usable(epoch) {
		t.Fatal("usable 2 × RevocationPoll after the last poll")
	}
}
