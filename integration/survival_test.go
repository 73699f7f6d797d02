package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Failure scenarios. Each runs one Go client per TLS version reconnecting
// through HAProxy the whole time, and requires that no connection failed (a
// handshake may be full, never fail; every request is answered) and that
// returning clients kept resuming as the mode promises.

// TestNodeKilled kills one node (SIGKILL, between two connections of each
// client, since a connection in progress on a crashing node is lost
// whatever the design): HAProxy routes around it, first by redispatching
// the refused connections, then because its health check marked it down.
func TestNodeKilled(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := newCluster(t, m)
			tr := startTraffic(t, c.lb.addr)
			tr.waitFor(t, 30)
			victim := c.busiestNode(t)
			tr.between(func() { c.killNode(t, victim) })
			c.lb.waitServer(t, victim.name, "DOWN", func(s serverStat) bool { return s.status == "DOWN" })
			st, err := c.lb.servers()
			if err != nil {
				t.Fatal(err)
			}
			downAt := st[victim.name].stot
			tr.waitFor(t, 60)
			res := tr.finish()
			for _, v := range versions {
				check(t, m, "go, traffic while a node is killed", v, res[v], m.failover)
			}
			st, err = c.lb.servers()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("haproxy after the kill: %+v", st)
			if got := st[victim.name].stot; got != downAt {
				t.Errorf("haproxy sent %d connections to %s after marking it down", got-downAt, victim.name)
			}
		})
	}
}

// TestRollingRestart restarts every node in turn as an operator does:
// taken out of HAProxy, drained, SIGTERM (it must exit cleanly), started
// again on the same port, ready, put back. Sessions that clients got before
// the restart must resume after it.
func TestRollingRestart(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := newCluster(t, m)
			tr := startTraffic(t, c.lb.addr)
			tr.waitFor(t, 20)
			before := map[uint16]witnesses{}
			sess := map[uint16]string{}
			for _, v := range versions {
				before[v] = newWitnesses(t, c.lb.addr, v, 5)
				sess[v] = filepath.Join(t.TempDir(), "sess.pem")
				if got, err := opensslSession(t, c.lb.addr, v, "", sess[v]); err != nil || got != "New" {
					t.Fatalf("openssl %s: %q %v", versionName(v), got, err)
				}
			}
			for _, n := range c.nodes {
				c.restartNode(t, n)
				tr.waitFor(t, 15)
			}
			res := tr.finish()
			for _, v := range versions {
				check(t, m, "go, traffic during a rolling restart", v, res[v], m.failover)
			}
			for _, v := range versions {
				check(t, m, "go, sessions from before a rolling restart", v, before[v].comeBack(), m.restart)
				got, err := opensslSession(t, c.lb.addr, v, sess[v], "")
				var tl tally
				tl.add(false, got == "Reused", err)
				check(t, m, "openssl -sess_in, session from before a rolling restart", v, tl, m.restart)
			}
		})
	}
}

// TestStoreRestart kills the mode's shared store during traffic and starts
// it again (empty: no persistence), waiting each time until every node has
// noticed. For tickets with Redis keys, the nodes keep their last ring and
// keep resuming; after the store is back they write their keys to it
// again, so a node started afterwards opens the sessions issued before the
// outage. For shared session stores, handshakes never fail, and once the
// store is back sessions resume on any node again.
func TestStoreRestart(t *testing.T) {
	for _, m := range modes {
		if m.store == "" {
			continue // nothing shared to lose
		}
		t.Run(m.name, func(t *testing.T) {
			c := newCluster(t, m)
			tr := startTraffic(t, c.lb.addr)
			tr.waitFor(t, 20)
			before := map[uint16]witnesses{}
			for _, v := range versions {
				before[v] = newWitnesses(t, c.lb.addr, v, 3)
			}

			c.env.store.Stop()
			m.storeDown(t, c)
			tr.waitFor(t, 40)
			c.env.store.Restart()
			m.storeBack(t, c)
			tr.waitFor(t, 40)
			res := tr.finish()
			for _, v := range versions {
				check(t, m, "go, traffic while the store is killed and restarted", v, res[v], m.storeOutage)
			}
			for _, v := range versions {
				check(t, m, "go, sessions from before the store restarted", v, before[v].comeBack(), m.storeOutage)
				// Once the nodes use the store again, sessions resume on any node.
				check(t, m, "go, sessions issued after the store came back", v,
					newWitnesses(t, c.lb.addr, v, 3).comeBack(), m.steady)
			}

			if m.keySource == "redis" {
				// A node started now has only what Redis holds.
				n := c.nodes[0]
				c.restartNode(t, n)
				for _, v := range versions {
					since := newWitnesses(t, c.lb.addr, v, 3)
					for _, w := range before[v] {
						w.addr = n.addr // straight to the new node
					}
					for _, w := range since {
						w.addr = n.addr
					}
					check(t, m, "go, sessions from before the outage, on a node started after it", v, before[v].comeBack(), m.restart)
					check(t, m, "go, sessions from after the outage, on a node started after it", v, since.comeBack(), m.restart)
				}
			}
		})
	}
}

// TestTicketKeyFileRotation rotates the shared key file during traffic as
// the README says (edgeproxy keys gen a new key; write new key + old key
// to a temporary file and rename it over the old one), waits until every
// node reloaded it, and later removes the old key.
func TestTicketKeyFileRotation(t *testing.T) {
	for _, m := range modes {
		if m.keySource != "file" {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			c := newCluster(t, m)
			tr := startTraffic(t, c.lb.addr)
			tr.waitFor(t, 20)
			oldKey, err := os.ReadFile(c.env.keyFile)
			if err != nil {
				t.Fatal(err)
			}
			kept, dropped, sess := map[uint16]witnesses{}, map[uint16]witnesses{}, map[uint16]string{}
			for _, v := range versions {
				kept[v] = newWitnesses(t, c.lb.addr, v, 3)
				dropped[v] = newWitnesses(t, c.lb.addr, v, 3)
				sess[v] = filepath.Join(t.TempDir(), "sess.pem")
				if got, err := opensslSession(t, c.lb.addr, v, "", sess[v]); err != nil || got != "New" {
					t.Fatalf("openssl %s: %q %v", versionName(v), got, err)
				}
			}

			// Rotate: the new key seals, the old one still opens.
			newKeyPath := filepath.Join(c.dir, "new.key")
			keysGen(t, newKeyPath)
			newKey, err := os.ReadFile(newKeyPath)
			if err != nil {
				t.Fatal(err)
			}
			reloads := c.keyUpdates(t, "file", "success")
			replaceFile(t, c.env.keyFile, append(append([]byte(nil), newKey...), oldKey...))
			reloads = c.waitKeyUpdate(t, "file", "success", reloads, 2)
			tr.waitFor(t, 40)
			after := map[uint16]witnesses{}
			for _, v := range versions {
				check(t, m, "go, sessions under the old key, new key added", v, kept[v].comeBack(), m.steady)
				after[v] = newWitnesses(t, c.lb.addr, v, 3)
			}

			// Remove the old key: its sessions get full handshakes, not errors.
			replaceFile(t, c.env.keyFile, newKey)
			c.waitKeyUpdate(t, "file", "success", reloads, 1)
			tr.waitFor(t, 40)
			for _, v := range versions {
				check(t, m, "go, sessions under a removed key", v, dropped[v].comeBack(), noShare)
				got, err := opensslSession(t, c.lb.addr, v, sess[v], "")
				var tl tally
				tl.add(false, got == "Reused", err)
				check(t, m, "openssl -sess_in, session under a removed key", v, tl, noShare)
				check(t, m, "go, sessions under the new key, old key removed", v, after[v].comeBack(), m.steady)
			}
			// While the nodes reload one after the other, a ticket sealed under
			// the new key by a node that has reloaded may reach one that has
			// not yet: a full handshake, inherent to a one-step rotation.
			res := tr.finish()
			for _, v := range versions {
				check(t, m, "go, traffic during two key file rotations", v, res[v], atLeast(0.97))
			}
			for _, n := range c.nodes {
				ms := c.metrics(t, n)
				t.Logf("%s unwrap results: opened=%v miss=%v bad=%v", n.name,
					ms.sum("edgeproxy_resumption_unwrap_total", "result", "opened"),
					ms.sum("edgeproxy_resumption_unwrap_total", "result", "miss"),
					ms.sum("edgeproxy_resumption_unwrap_total", "result", "bad"))
			}
		})
	}
}

// busiestNode returns the node that made the most handshakes.
func (c *cluster) busiestNode(t *testing.T) *node {
	t.Helper()
	var best *node
	bestN := -1.0
	for _, n := range c.nodes {
		if hs := c.metrics(t, n).sum("edgeproxy_tls_handshakes_total"); hs > bestN {
			best, bestN = n, hs
		}
	}
	return best
}

// sighupAll sends SIGHUP (reload) to every node.
func (c *cluster) sighupAll(t *testing.T) {
	t.Helper()
	for _, n := range c.nodes {
		if err := n.p.signal(syscall.SIGHUP); err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
	}
}

// replaceFile writes data to a temporary file beside path (mode 0600) and
// renames it over path, so a node never reads a half-written key file.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.tmp", filepath.Base(path)))
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
