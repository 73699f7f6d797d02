package integration

import (
	"fmt"
	"testing"
	"time"
)

// The modes' storeDown and storeBack hooks: how the suite knows that every
// node has noticed a store outage and its end, so TestStoreRestart does not
// pass merely because no node looked at the store in the meantime.

// keysStoreDown: the Redis ticket key source refreshes only every 30
// seconds, so SIGHUP makes every node try now; each must count a failed
// update and report itself degraded (it keeps its last ring).
func keysStoreDown(t *testing.T, c *cluster) {
	t.Helper()
	fails := c.keyUpdates(t, "redis", "failure")
	c.sighupAll(t)
	c.waitKeyUpdate(t, "redis", "failure", fails, 0)
	for i, d := range c.gauge(t, "edgeproxy_ticketkeys_degraded", "source", "redis") {
		if d != 1 {
			t.Errorf("%s: ticket keys degraded = %v with Redis down, want 1", c.nodes[i].name, d)
		}
	}
}

// keysStoreBack: after SIGHUP every node must have refreshed from Redis
// again and no longer be degraded.
func keysStoreBack(t *testing.T, c *cluster) {
	t.Helper()
	oks := c.keyUpdates(t, "redis", "success")
	c.sighupAll(t)
	c.waitKeyUpdate(t, "redis", "success", oks, 0)
	for i, d := range c.gauge(t, "edgeproxy_ticketkeys_degraded", "source", "redis") {
		if d != 0 {
			t.Errorf("%s: ticket keys degraded = %v after Redis came back, want 0", c.nodes[i].name, d)
		}
	}
}

// sessionStoreDown: every node, reached by the traffic, must have seen
// store calls fail and opened its circuit breaker.
func sessionStoreDown(t *testing.T, c *cluster) {
	t.Helper()
	before := c.storeCalls(t, "error", "timeout", "skipped")
	for i, n := range c.nodes {
		waitUntil(t, 20*time.Second, n.name+": the session store breaker to open", func() (bool, string) {
			ms, err := scrape(n.adminAddr)
			if err != nil {
				return false, err.Error()
			}
			failed := storeCalls(ms, "error", "timeout", "skipped")
			open := ms.sum("edgeproxy_session_store_breaker_open")
			return failed > before[i] && open >= 1, fmt.Sprintf("failed calls %v (was %v), breaker open %v", failed, before[i], open)
		})
	}
}

// sessionStoreBack: every node must have closed its breaker and stored
// sessions in the store again.
func sessionStoreBack(t *testing.T, c *cluster) {
	t.Helper()
	before := c.storeCalls(t, "ok")
	for i, n := range c.nodes {
		waitUntil(t, 30*time.Second, n.name+": the session store in use again", func() (bool, string) {
			ms, err := scrape(n.adminAddr)
			if err != nil {
				return false, err.Error()
			}
			ok := storeCalls(ms, "ok")
			open := ms.sum("edgeproxy_session_store_breaker_open")
			return ok > before[i] && open == 0, fmt.Sprintf("ok calls %v (was %v), breaker open %v", ok, before[i], open)
		})
	}
}

// storeCalls sums edgeproxy_session_store_calls_total over results.
func storeCalls(ms metrics, results ...string) float64 {
	total := 0.0
	for _, r := range results {
		total += ms.sum("edgeproxy_session_store_calls_total", "result", r)
	}
	return total
}

// storeCalls returns storeCalls for every node.
func (c *cluster) storeCalls(t *testing.T, results ...string) []float64 {
	t.Helper()
	out := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = storeCalls(c.metrics(t, n), results...)
	}
	return out
}
