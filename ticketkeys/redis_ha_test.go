package ticketkeys

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

// The Redis source on Redis Cluster and Sentinel, and at the scale of a
// large fleet (#12).

// storeClient returns the client edgeproxy builds for cfg (internal/app
// shares the session store's), closed when the test ends.
func storeClient(t *testing.T, cfg redisstore.Config) RedisClient {
	t.Helper()
	cfg.Timeout = time.Second // generous: -race on a loaded CI machine
	st, err := redisstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.Client()
}

// reloadAll reloads every node, failing t on an error or a degraded node.
func reloadAll(t *testing.T, when string, nodes []*node) {
	t.Helper()
	for i, n := range nodes {
		if err := n.src.Reload(); err != nil {
			t.Fatalf("%s: node %d: %v", when, i, err)
		}
		if n.src.Degraded() {
			t.Fatalf("%s: node %d degraded", when, i)
		}
	}
}

// sameRings fails t unless every node publishes node 0's ring.
func sameRings(t *testing.T, when string, nodes []*node) {
	t.Helper()
	want := sig(nodes[0].h.Ring())
	for i, n := range nodes[1:] {
		if got := sig(n.h.Ring()); got != want {
			t.Fatalf("%s: node %d ring differs from node 0:\n%s\nvs\n%s", when, i+1, got, want)
		}
	}
}

// TestRedisClusterNodesAgree runs three sources on a three-master Redis
// Cluster through several epochs, and moves the slots of the current and
// next epochs' keys to other masters between refreshes: every refresh
// succeeds and the nodes keep one ring. The source's pipeline (SET NX and
// GET per epoch) holds single-key commands only, so keys need no hash tag:
// a Cluster client splits the pipeline by slot, and the window's keys sit
// on several masters.
func TestRedisClusterNodesAgree(t *testing.T) {
	t.Parallel()
	cl := testserver.NewRedisCluster(t, 3)
	kek, _ := writeKEK(t, 7)
	var nodes []*node
	for i := range 3 {
		c := storeClient(t, redisstore.Config{Addrs: cl.Addrs()})
		nodes = append(nodes, newClientNode(t, c, kek, t0.Add(time.Duration(i)*10*time.Minute)).start(t))
	}
	sameRings(t, "start", nodes)
	step := func(when string) {
		t.Helper()
		for _, n := range nodes {
			n.clock.Add(testRotate)
		}
		reloadAll(t, when, nodes)
		sameRings(t, when, nodes)
	}
	for i := range testPast {
		step(fmt.Sprintf("epoch +%d", i+1))
	}
	masters := map[string]bool{}
	for _, k := range nodes[0].h.Ring().keys {
		slot, err := cl.KeySlot(sessioncache.TicketKeyKey("", keyEpoch(k)))
		if err != nil {
			t.Fatal(err)
		}
		owner, err := cl.SlotOwner(slot)
		if err != nil {
			t.Fatal(err)
		}
		masters[owner.Addr] = true
	}
	t.Logf("the ring's %d keys live on %d masters", nodes[0].h.Ring().Len(), len(masters))

	before := sig(nodes[0].h.Ring())
	e := keyEpoch(nodes[0].h.Ring().Current())
	for _, ep := range []int64{e, e + 1} {
		slot, err := cl.KeySlot(sessioncache.TicketKeyKey("", ep))
		if err != nil {
			t.Fatal(err)
		}
		src, err := cl.SlotOwner(slot)
		if err != nil {
			t.Fatal(err)
		}
		dst := cl.Nodes[0]
		if dst == src {
			dst = cl.Nodes[1]
		}
		moved, err := cl.MigrateSlot(slot, dst, 1, func() {
			reloadAll(t, fmt.Sprintf("epoch %d's slot migrating", ep), nodes)
		})
		if err != nil || moved < 1 {
			t.Fatalf("migrating epoch %d's slot %d: %d keys, %v", ep, slot, moved, err)
		}
		reloadAll(t, fmt.Sprintf("epoch %d's slot migrated", ep), nodes)
		if got := sig(nodes[0].h.Ring()); got != before {
			t.Fatalf("epoch %d's slot migrated: ring changed:\n%s\nwas\n%s", ep, got, before)
		}
		sameRings(t, fmt.Sprintf("epoch %d's slot migrated", ep), nodes)
	}
	step("epoch after the migrations")
}

// TestRedisSentinelNodesAgree runs three sources through Sentinel: they
// agree; when the master is killed they keep serving their ring (degraded
// while no master answers); after Sentinel promotes the replica they
// refresh from it without a change of keys (the keys were replicated), and
// the next epoch's key is created on the new master and agreed on.
func TestRedisSentinelNodesAgree(t *testing.T) {
	t.Parallel()
	rs := testserver.NewRedisSentinel(t)
	kek, _ := writeKEK(t, 8)
	var nodes []*node
	for i := range 3 {
		c := storeClient(t, redisstore.Config{Addrs: rs.SentinelAddrs(), MasterName: rs.MasterName})
		nodes = append(nodes, newClientNode(t, c, kek, t0.Add(time.Duration(i)*10*time.Minute)).start(t))
	}
	sameRings(t, "start", nodes)
	before := sig(nodes[0].h.Ring())
	rs.WaitReplicated()

	rs.Master.Stop()
	degraded := 0
	for i, n := range nodes {
		if err := n.src.Reload(); err != nil {
			if !errors.Is(err, ErrUnavailable) || !n.src.Degraded() {
				t.Errorf("node %d with the master down: %v, degraded %v; want ErrUnavailable and degraded", i, err, n.src.Degraded())
			}
			degraded++
		}
		if got := sig(n.h.Ring()); got != before {
			t.Fatalf("node %d: ring changed with the master down", i)
		}
	}
	t.Logf("%d of 3 nodes degraded before the promotion", degraded)

	rs.WaitPromoted()
	for i, n := range nodes {
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; {
			if err = n.src.Reload(); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // polling the client's view of Sentinel
		}
		if err != nil || n.src.Degraded() {
			t.Fatalf("node %d after the failover: %v, degraded %v", i, err, n.src.Degraded())
		}
	}
	if got := sig(nodes[0].h.Ring()); got != before {
		t.Fatalf("ring changed across the failover:\n%s\nwas\n%s", got, before)
	}
	sameRings(t, "after the failover", nodes)
	for _, n := range nodes {
		n.clock.Add(testRotate)
	}
	reloadAll(t, "next epoch on the new master", nodes)
	sameRings(t, "next epoch on the new master", nodes)
	if v, err := rs.Replica.Do("exists", sessioncache.TicketKeyKey("", keyEpoch(nodes[0].h.Ring().Current())+1)); err != nil || v != int64(1) {
		t.Fatalf("the new master does not hold the next epoch's key: %v %v", v, err)
	}
}

// TestRedisManySourcesSkewedClocks runs 100 sources in one process on one
// Redis, with clocks spread over ±30s around a shared clock and epochs of
// one minute. They start one after another, those ahead first, then
// refresh together (racing on SET NX) as the shared clock crosses several
// epoch boundaries. At every step:
// each epoch has one key across all sources; each source seals with the
// key of its own epoch, at most one epoch from the shared clock's; and every
// source opens what every other source seals.
func TestRedisManySourcesSkewedClocks(t *testing.T) {
	t.Parallel()
	const (
		sources = 100
		skew    = 30 * time.Second
		rotate  = time.Minute
	)
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 9)
	base := newFakeClock(t0.Add(7 * time.Second))
	nodes := make([]*node, sources)
	for i := range nodes {
		d := -skew + time.Duration(i)*2*skew/(sources-1)
		nodes[i] = newNode(t, srv.Addr, kek, t0, func(c *RedisConfig) {
			c.RotateEvery, c.Lifetime = rotate, 3*rotate
			c.Now = func() time.Time { return base.Now().Add(d) }
		})
	}
	// all runs f on every node at once and fails t on the first error.
	all := func(what string, f func(*node) error) {
		t.Helper()
		errs := make([]error, sources)
		var wg sync.WaitGroup
		for i, n := range rand.Perm(sources) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = f(nodes[n])
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// The sources ahead start first: each must still open the tickets of
	// the sources behind it, which seal with the previous epoch's key.
	for i := sources - 1; i >= 0; i-- {
		if err := nodes[i].src.Start(t.Context()); err != nil {
			t.Fatalf("source %d: %v", i, err)
		}
	}

	epochOf := func(at time.Time) int64 { return at.UnixNano() / int64(rotate) }
	byEpoch := map[int64]string{} // name:secret of each epoch's key, across sources and steps
	for step := range 12 {
		if step > 0 {
			base.Add(17 * time.Second)
			all(fmt.Sprintf("step %d", step), func(n *node) error { return n.src.Reload() })
		}
		sealing := map[Name]*Key{}
		for i, n := range nodes {
			r := n.h.Ring()
			if n.src.Degraded() {
				t.Fatalf("step %d: source %d degraded", step, i)
			}
			cur := r.Current()
			if own := epochOf(n.src.now()); keyEpoch(cur) != own {
				t.Fatalf("step %d: source %d seals with epoch %d's key, its clock is in epoch %d", step, i, keyEpoch(cur), own)
			}
			if d := keyEpoch(cur) - epochOf(base.Now()); d < -1 || d > 1 {
				t.Fatalf("step %d: source %d seals with epoch %d's key, %d epochs from the shared clock", step, i, keyEpoch(cur), d)
			}
			sealing[cur.Name] = cur
			for _, k := range r.keys {
				s := fmt.Sprintf("%s:%x", k.Name, k.Secret)
				if prev, ok := byEpoch[keyEpoch(k)]; ok && prev != s {
					t.Fatalf("step %d: source %d holds another key for epoch %d", step, i, keyEpoch(k))
				}
				byEpoch[keyEpoch(k)] = s
			}
		}
		for i, n := range nodes {
			for name, k := range sealing {
				if got := n.h.Ring().Lookup(name); got == nil || got.Secret != k.Secret {
					t.Fatalf("step %d: source %d cannot open tickets sealed with epoch %d's key", step, i, keyEpoch(k))
				}
			}
		}
		if len(sealing) > 2 {
			t.Fatalf("step %d: %d different sealing keys, want at most 2 with clocks within one epoch", step, len(sealing))
		}
	}
	t.Logf("%d sources agreed on %d epochs' keys", sources, len(byEpoch))
}
