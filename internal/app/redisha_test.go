package app

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// Redis Cluster and Sentinel, run for real under a fleet in redis mode
// (#12): resumption across nodes, a slot migration and a failover in the
// middle of traffic, with no failed handshake.

// redisFleet starts n nodes in redis mode on the Redis at addrs (Sentinels
// if masterName is set, else Cluster seeds).
func redisFleet(t *testing.T, n int, addrs []string, masterName string) []*App {
	t.Helper()
	up := httptest.NewServer(demoapp.Handler("up"))
	t.Cleanup(up.Close)
	// A generous store timeout: these tests are about Cluster and Sentinel,
	// and a loaded CI machine can delay a loopback reply past 25ms.
	res := config.Resumption{Mode: "redis", Store: config.Store{Timeout: time.Second}}
	res.Redis.Addrs, res.Redis.MasterName = addrs, masterName
	var nodes []*App
	for range n {
		nodes = append(nodes, startNode(t, config.Config{
			Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: res,
		}))
	}
	return nodes
}

// ticketFleet starts n nodes in tickets mode whose ticket keys come from
// the Redis at addrs (Sentinels if masterName is set, else Cluster seeds).
func ticketFleet(t *testing.T, n int, addrs []string, masterName string) []*App {
	t.Helper()
	up := httptest.NewServer(demoapp.Handler("up"))
	t.Cleanup(up.Close)
	kek := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(kek, []byte(rand.Text() + rand.Text())[:ticketkeys.KEKSize], 0o600); err != nil {
		t.Fatal(err)
	}
	res := config.Resumption{Mode: "tickets", TicketKeys: config.TicketKeys{Source: "redis",
		Redis: config.RedisKeys{Addrs: addrs, MasterName: masterName, KEKFile: kek}}}
	var nodes []*App
	for range n {
		nodes = append(nodes, startNode(t, config.Config{
			Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: res,
		}))
	}
	return nodes
}

// dial makes one TLS connection and one request, and returns whether the
// handshake resumed and the session ID the upstream saw: the session the
// client holds afterwards, whose store key is sessioncache.SessionKey of
// it. Unlike connect it fails nothing, so traffic goroutines can use it.
func dial(addr string, version uint16, cache tls.ClientSessionCache) (resumed bool, sessionID string, err error) {
	c, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true, ServerName: "localhost", ClientSessionCache: cache,
		MinVersion: version, MaxVersion: version, NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		return false, "", fmt.Errorf("handshake with %s: %w", addr, err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false, "", fmt.Errorf("request via %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var r demoapp.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return false, "", fmt.Errorf("reply via %s: %w", addr, err)
	}
	return c.ConnectionState().DidResume, r.SessionID, nil
}

// crossNode reconnects one client to the nodes in turn and requires every
// reconnect to resume: the store is healthy, so anything less is a miss.
func crossNode(t *testing.T, nodes []*App) {
	t.Helper()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(1)
		connect(t, nodes[0].Addr().String(), v, cache)
		const reconnects = 30
		for i := 1; i <= reconnects; i++ {
			if !connect(t, nodes[i%len(nodes)].Addr().String(), v, cache) {
				t.Fatalf("TLS %s: reconnect %d to node %d did not resume", proxy.VersionName(v), i, i%len(nodes))
			}
		}
	}
}

// traffic runs clients that reconnect across nodes until stop is called,
// which returns the handshakes made, failed and resumed.
func traffic(nodes []*App, clients int) (stop func() (total, failed, resumed int64)) {
	var total, failed, resumed atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cache := tls.NewLRUClientSessionCache(1)
			v := []uint16{tls.VersionTLS12, tls.VersionTLS13}[w%2]
			for i := 0; i < 100000; i++ {
				select {
				case <-done:
					return
				default:
				}
				ok, _, err := dial(nodes[(w+i)%len(nodes)].Addr().String(), v, cache)
				total.Add(1)
				if err != nil {
					failed.Add(1)
				} else if ok {
					resumed.Add(1)
				}
			}
		}()
	}
	return func() (int64, int64, int64) {
		close(done)
		wg.Wait()
		return total.Load(), failed.Load(), resumed.Load()
	}
}

// TestFleetRedisCluster runs three nodes on a three-master Redis Cluster:
// sessions resume across nodes, and while traffic runs, the slot of every
// session some clients hold moves to another master, key by key. Each such
// client resumes on another node while its key is still on the old master
// (slot migrating), once it has moved (the old master answers ASK), and
// after the slot changed owner (MOVED); no handshake of the traffic fails.
//
// Session keys are single keys (GET, SET, DEL), so they need no hash tag;
// each lands on the master of its own slot.
func TestFleetRedisCluster(t *testing.T) {
	t.Parallel()
	cl := testserver.NewRedisCluster(t, 3)
	nodes := redisFleet(t, 3, cl.Addrs(), "")
	crossNode(t, nodes)
	ticketNodes := ticketFleet(t, 3, cl.Addrs(), "")
	crossNode(t, ticketNodes)

	// Clients whose sessions will move, grouped by slot.
	type client struct {
		cache tls.ClientSessionCache
		key   string
	}
	bySlot := map[int][]client{}
	for i := range 12 {
		cache := tls.NewLRUClientSessionCache(1)
		_, sid, err := dial(nodes[i%3].Addr().String(), tls.VersionTLS13, cache)
		if err != nil || len(sid) != 32 {
			t.Fatalf("first connection: session id %q, %v", sid, err)
		}
		id, err := hex.DecodeString(sid)
		if err != nil {
			t.Fatal(err)
		}
		key := sessioncache.SessionKey("", id)
		slot, err := cl.KeySlot(key)
		if err != nil {
			t.Fatal(err)
		}
		bySlot[slot] = append(bySlot[slot], client{cache, key})
	}
	resumeAll := func(when string, cs []client, node int) {
		t.Helper()
		for _, c := range cs {
			// A copy of the cache, so every attempt presents the session
			// whose key is migrating.
			ok, _, err := dial(nodes[node%3].Addr().String(), tls.VersionTLS13, snapshot(c.cache))
			if err != nil || !ok {
				t.Errorf("%s: session %s did not resume on node %d (%v)", when, c.key, node%3, err)
			}
		}
	}

	stop := traffic(nodes, 4)
	stopTickets := traffic(ticketNodes, 2)
	moved, step := 0, 0
	for slot, cs := range bySlot {
		src, err := cl.SlotOwner(slot)
		if err != nil {
			t.Fatal(err)
		}
		var dst *testserver.Server
		for i, n := range cl.Nodes {
			if n == src {
				dst = cl.Nodes[(i+1)%len(cl.Nodes)]
			}
		}
		n, err := cl.MigrateSlot(slot, dst, 1, func() {
			step++
			resumeAll(fmt.Sprintf("slot %d migrating", slot), cs, step)
		})
		if err != nil {
			t.Fatalf("migrating slot %d: %v", slot, err)
		}
		moved += n
		if owner, err := cl.SlotOwner(slot); err != nil || owner != dst {
			t.Fatalf("slot %d: owner %v after migration (%v), want %s", slot, owner, err, dst.Addr)
		}
		step++
		resumeAll(fmt.Sprintf("slot %d migrated", slot), cs, step)
	}
	total, failed, resumed := stop()
	ticketsUnderLoad(t, "slot migration", stopTickets, 2)
	t.Logf("migrated %d slots (%d keys) under traffic: %d handshakes, %d failed, %d resumed", len(bySlot), moved, total, failed, resumed)
	if moved < 12 {
		t.Errorf("moved %d keys, want at least the 12 sessions' keys", moved)
	}
	if failed != 0 {
		t.Errorf("%d of %d handshakes failed during the slot migration", failed, total)
	}
}

// TestFleetRedisSentinel runs three nodes on Redis behind Sentinel:
// sessions resume across nodes; the master is killed under traffic and
// Sentinel promotes the replica; no handshake fails, the nodes follow the
// new master, and sessions written before the failover still resume.
func TestFleetRedisSentinel(t *testing.T) {
	t.Parallel()
	rs := testserver.NewRedisSentinel(t)
	nodes := redisFleet(t, 3, rs.SentinelAddrs(), rs.MasterName)
	crossNode(t, nodes)
	ticketNodes := ticketFleet(t, 3, rs.SentinelAddrs(), rs.MasterName)
	crossNode(t, ticketNodes)

	var before []tls.ClientSessionCache
	for i := range 6 {
		cache := tls.NewLRUClientSessionCache(1)
		if _, _, err := dial(nodes[i%3].Addr().String(), tls.VersionTLS13, cache); err != nil {
			t.Fatal(err)
		}
		before = append(before, cache)
	}
	for _, n := range nodes {
		settle(t, n) // every session is on the master before it is copied
	}
	rs.WaitReplicated()

	stop := traffic(nodes, 4)
	stopTickets := traffic(ticketNodes, 2)
	start := time.Now()
	rs.Master.Stop()
	for _, n := range ticketNodes {
		// As SIGHUP does: the refresh fails, the node keeps its ring.
		if err := n.Reload(); err == nil {
			t.Log("a ticket key refresh succeeded with the master down (already promoted?)")
		}
	}
	rs.WaitPromoted()
	promoted := time.Since(start)
	// The nodes are back on the store once a fresh session written through
	// one node resumes on the next, all the way round: every node reads
	// and writes the new master (each breaker may hold its node off for
	// its cooldown first, and one node alone coming back proves nothing
	// of the others).
	back := false
	for deadline := time.Now().Add(30 * time.Second); !back && time.Now().Before(deadline); {
		cache := tls.NewLRUClientSessionCache(1)
		if _, _, err := dial(nodes[0].Addr().String(), tls.VersionTLS13, cache); err != nil {
			t.Fatal(err)
		}
		back = true
		for _, n := range []*App{nodes[1], nodes[2], nodes[0]} {
			ok, _, _ := dial(n.Addr().String(), tls.VersionTLS13, cache)
			back = back && ok
		}
	}
	total, failed, resumed := stop()
	ticketsUnderLoad(t, "failover", stopTickets, 2)
	t.Logf("sentinel failover under traffic: replica promoted %s after the kill, sessions shared again after %s; %d handshakes, %d failed, %d resumed",
		promoted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), total, failed, resumed)
	if failed != 0 {
		t.Errorf("%d of %d handshakes failed during the failover", failed, total)
	}
	if !back {
		t.Fatal("no session resumed across nodes within 30s of the failover")
	}
	for i, c := range before {
		if ok, _, err := dial(nodes[(i+1)%3].Addr().String(), tls.VersionTLS13, c); err != nil || !ok {
			t.Errorf("session %d written before the failover did not resume after it (%v)", i, err)
		}
	}
	crossNode(t, nodes)
	crossNode(t, ticketNodes)
}

// ticketsUnderLoad stops the traffic on a tickets-mode fleet whose keys
// come from Redis and requires that nothing failed and that every
// reconnect resumed: the nodes hold their key rings, so a Redis event
// (failover, slot migration) must not cost a single resumption.
func ticketsUnderLoad(t *testing.T, event string, stop func() (total, failed, resumed int64), clients int64) {
	t.Helper()
	total, failed, resumed := stop()
	t.Logf("tickets mode, keys in Redis, %s under traffic: %d handshakes, %d failed, %d resumed", event, total, failed, resumed)
	if failed != 0 || resumed != total-clients {
		t.Errorf("tickets mode, %s: %d of %d handshakes failed and %d resumed, want 0 failed and all but the %d first resumed",
			event, failed, total, resumed, clients)
	}
}
