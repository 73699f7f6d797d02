package app

import (
	"bufio"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// TestStoreCapacity measures what one session costs in Redis and memcached
// (the capacity figures in README.md, #12): a real node writes sessions of
// real TLS 1.2 and 1.3 clients, each one full handshake, and the test
// reads the servers' own accounting (Redis MEMORY USAGE and INFO memory,
// memcached stats and stats slabs). It checks that each handshake stored
// exactly one session and that the figures are plausible, and logs them.
// EDGEPROXY_CAPACITY_SESSIONS sets the sessions per TLS version (default
// 100); the README figures come from 5000.
func TestStoreCapacity(t *testing.T) {
	t.Parallel()
	perVersion := 100
	if n, err := strconv.Atoi(os.Getenv("EDGEPROXY_CAPACITY_SESSIONS")); err == nil && n > 0 {
		perVersion = n
	}
	versions := []uint16{tls.VersionTLS12, tls.VersionTLS13}
	total := perVersion * len(versions)
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	node := func(res config.Resumption) *App {
		res.Store.Timeout = time.Second
		off := ""
		return startNode(t, config.Config{Admin: &off, Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: res})
	}
	// sessions makes perVersion full handshakes per version and returns
	// the store keys of the sessions issued, by version.
	sessions := func(a *App) map[uint16][]string {
		keys := map[uint16][]string{}
		for _, v := range versions {
			for range perVersion {
				_, sid, err := dial(a.Addr().String(), v, tls.NewLRUClientSessionCache(1))
				if err != nil {
					t.Fatal(err)
				}
				id, err := hex.DecodeString(sid)
				if err != nil || len(id) != 16 {
					t.Fatalf("session id %q: %v", sid, err)
				}
				keys[v] = append(keys[v], sessioncache.SessionKey("", id))
			}
		}
		return keys
	}
	const gib = 1 << 30

	t.Run("redis", func(t *testing.T) {
		srv := testserver.Redis(t)
		res := config.Resumption{Mode: "redis"}
		res.Redis.Addrs = []string{srv.Addr}
		a := node(res)
		before := usedMemory(t, srv)
		keys := sessions(a)
		settle(t, a)
		v, err := srv.Do("dbsize")
		if n, _ := v.(int64); err != nil || int(n) != total {
			t.Fatalf("redis keys: %v (%v), want %d (one per full handshake)", v, err, total)
		}
		after := usedMemory(t, srv)
		for _, v := range versions {
			var usage, val, key int
			for _, k := range keys[v] {
				u, err := srv.Do("memory", "usage", k, "samples", "0")
				n, _ := u.(int64)
				if err != nil || n == 0 {
					t.Fatalf("MEMORY USAGE %s: %v %v", k, u, err)
				}
				usage += int(n)
				l, _ := srv.Do("strlen", k)
				n, _ = l.(int64)
				val += int(n)
				key += len(k)
			}
			n := len(keys[v])
			t.Logf("redis TLS %s: value %d B, key %d B, MEMORY USAGE %d B per session",
				proxy.VersionName(v), val/n, key/n, usage/n)
			plausible(t, "redis MEMORY USAGE", usage/n, val/n+key/n)
		}
		per := (after - before) / total
		t.Logf("redis: used_memory grew %d B per session over %d sessions (key, value, TTL, both dicts): %.1fM sessions per GiB",
			per, total, float64(gib)/float64(per)/1e6)
	})

	t.Run("memcached", func(t *testing.T) {
		srv := testserver.Memcached(t)
		res := config.Resumption{Mode: "memcached"}
		res.Memcached.Servers = []string{srv.Addr}
		a := node(res)
		keys := sessions(a)
		settle(t, a)
		st, err := memcachedStats(srv.Addr, "")
		if err == nil && st["curr_items"] != total {
			t.Fatalf("memcached items: %d, want %d (one per full handshake)", st["curr_items"], total)
		}
		if err != nil {
			t.Fatal(err)
		}
		slabs, err := memcachedStats(srv.Addr, "slabs")
		if err != nil {
			t.Fatal(err)
		}
		// Items go to the slab class whose chunks fit them; a chunk is what
		// an item really takes.
		chunks, used := 0, 0
		for name, n := range slabs {
			if cls, ok := strings.CutSuffix(name, ":used_chunks"); ok && n > 0 {
				chunks += n * slabs[cls+":chunk_size"]
				used += n
				t.Logf("memcached: slab class %s: %d items in %d-byte chunks", cls, n, slabs[cls+":chunk_size"])
			}
		}
		if used != total {
			t.Fatalf("memcached: %d chunks in use, want %d", used, total)
		}
		key := 0
		for _, v := range versions {
			for _, k := range keys[v] {
				key += len(k)
			}
		}
		t.Logf("memcached: key %d B, item %d B (header, key, value), chunk %d B per session: %.1fM sessions per GiB",
			key/total, st["bytes"]/total, chunks/total, float64(gib)/float64(chunks/total)/1e6)
		plausible(t, "memcached chunk", chunks/total, st["bytes"]/total)
	})
}

// plausible fails t unless a per-session cost is at least the bytes it
// must hold and below 4 KiB (a session holds no certificate chain).
func plausible(t *testing.T, what string, got, least int) {
	t.Helper()
	if got < least || got > 4096 {
		t.Errorf("%s: %d B per session, want %d..4096", what, got, least)
	}
}

// usedMemory returns the Redis server's used_memory.
func usedMemory(t *testing.T, srv *testserver.Server) int {
	t.Helper()
	v, err := srv.Info("memory", "used_memory")
	n, perr := strconv.Atoi(v)
	if err != nil || perr != nil {
		t.Fatalf("used_memory %q: %v %v", v, err, perr)
	}
	return n
}

// memcachedStats returns the numeric answers of "stats [arg]".
func memcachedStats(addr, arg string) (map[string]int, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "stats %s\r\n", arg); err != nil {
		return nil, err
	}
	out := map[string]int{}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "END" {
			return out, nil
		}
		if len(f) == 3 && f[0] == "STAT" {
			if n, err := strconv.Atoi(f[2]); err == nil {
				out[f[1]] = n
			}
		}
	}
	return nil, fmt.Errorf("stats %s: no END: %v", arg, sc.Err())
}
