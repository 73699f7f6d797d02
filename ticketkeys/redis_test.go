package ticketkeys

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

const (
	testRotate   = time.Hour
	testLifetime = 3 * time.Hour // past = ceil(3h/1h)+1 = 4 epochs
	testPast     = 4
)

// t0 starts an epoch.
var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func epochAt(t time.Time) int64 { return t.UnixNano() / int64(testRotate) }

// keyEpoch reads the epoch a shared key's name starts with.
func keyEpoch(k *Key) int64 { return int64(binary.BigEndian.Uint64(k.Name[:8])) }

func newRedisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1, PoolSize: 2,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// writeKEK writes a 32-byte KEK derived from seed and returns its path and
// bytes.
func writeKEK(t testing.TB, seed uint64) (string, []byte) {
	path := filepath.Join(t.TempDir(), "kek")
	kek := rawKeys(KEKSize, 1, seed)
	writeFile(t, path, kek, 0o600)
	return path, kek
}

type node struct {
	src       *RedisSource
	h         *Holder
	clock     *fakeClock
	refreshes chan error
}

func newNode(t *testing.T, addr, kekPath string, now time.Time, mods ...func(*RedisConfig)) *node {
	t.Helper()
	return newClientNode(t, newRedisClient(t, addr), kekPath, now, mods...)
}

// newClientNode is newNode on any client: a Cluster or Sentinel one.
func newClientNode(t *testing.T, client RedisClient, kekPath string, now time.Time, mods ...func(*RedisConfig)) *node {
	t.Helper()
	n := &node{h: NewHolder(HolderConfig{}), clock: newFakeClock(now), refreshes: make(chan error, 64)}
	t.Cleanup(func() { n.h.Close() })
	cfg := RedisConfig{
		Client: client, KEKFile: kekPath,
		RotateEvery: testRotate, Lifetime: testLifetime, Now: n.clock.Now,
	}
	for _, m := range mods {
		m(&cfg)
	}
	src, err := NewRedisSource(n.h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	src.onRefresh = func(err error) {
		select {
		case n.refreshes <- err:
		default:
		}
	}
	n.src = src
	t.Cleanup(func() { src.Close() })
	return n
}

func (n *node) start(t *testing.T) *node {
	t.Helper()
	if err := n.src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// sig describes a ring as its keys' names and secrets, in order.
func sig(r *Ring) string {
	var b strings.Builder
	for _, k := range r.keys {
		fmt.Fprintf(&b, "%s:%x\n", k.Name, k.Secret)
	}
	return b.String()
}

func TestRedisConfigValidate(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	ok := RedisConfig{Client: c, KEKFile: "/kek"}
	tests := []struct {
		name    string
		mod     func(*RedisConfig)
		wantErr string
	}{
		{"ok", func(*RedisConfig) {}, ""},
		{"no client", func(c *RedisConfig) { c.Client = nil }, "ticketkeys.redis: a client is required"},
		{"no kek", func(c *RedisConfig) { c.KEKFile = "" }, "ticketkeys.kek_file: required"},
		{"bad prefix", func(c *RedisConfig) { c.Prefix = "a b" }, `ticketkeys.prefix: "a b" makes illegal store keys`},
		{"negative rotate", func(c *RedisConfig) { c.RotateEvery = -time.Second }, `ticketkeys.rotate_every: must be positive, got "-1s"`},
		{"tiny rotate", func(c *RedisConfig) { c.RotateEvery = time.Millisecond }, `ticketkeys.rotate_every: must be at least 1s, got "1ms"`},
		{"window too big", func(c *RedisConfig) { c.RotateEvery = time.Minute }, "rotate less often or shorten the lifetime"},
		{"negative timeout", func(c *RedisConfig) { c.Timeout = -time.Second }, `ticketkeys.timeout: must be positive, got "-1s"`},
		{"negative refresh", func(c *RedisConfig) { c.RefreshEvery = -time.Second }, `ticketkeys.refresh_every: must be positive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mod(&cfg)
			err := cfg.Validate()
			if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestRedisNodesAgree starts three nodes at different moments of one epoch
// and moves them through several epochs: at every step they hold the same
// ring, and no epoch's key ever changes.
func TestRedisNodesAgree(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 1)
	nodes := []*node{
		newNode(t, srv.Addr, kek, t0.Add(5*time.Minute)).start(t),
		newNode(t, srv.Addr, kek, t0.Add(25*time.Minute)).start(t),
		newNode(t, srv.Addr, kek, t0.Add(50*time.Minute)).start(t),
	}
	e0 := epochAt(t0)
	byEpoch := make(map[int64]string) // epoch -> name:secret, fixed once seen
	check := func(step int) {
		t.Helper()
		want := sig(nodes[0].h.Ring())
		for i, n := range nodes[1:] {
			if got := sig(n.h.Ring()); got != want {
				t.Fatalf("step %d: node %d ring differs from node 0:\n%s\nvs\n%s", step, i+1, got, want)
			}
		}
		r := nodes[0].h.Ring()
		e := e0 + int64(step)
		if keyEpoch(r.Current()) != e {
			t.Fatalf("step %d: sealing key is for epoch %d, want %d", step, keyEpoch(r.Current()), e)
		}
		if want := min(step+1, testPast) + 2; r.Len() != want {
			t.Fatalf("step %d: ring has %d keys, want %d (epochs %d..%d that exist)", step, r.Len(), want, max(e0-1, e-testPast), e+1)
		}
		for _, k := range r.keys {
			ep := keyEpoch(k)
			if ep < e-testPast || ep > e+1 {
				t.Errorf("step %d: key for epoch %d outside the window", step, ep)
			}
			s := fmt.Sprintf("%s:%x", k.Name, k.Secret)
			if prev, ok := byEpoch[ep]; ok && prev != s {
				t.Errorf("step %d: key for epoch %d changed", step, ep)
			}
			byEpoch[ep] = s
			if !k.Created.Equal(time.Unix(0, ep*int64(testRotate))) {
				t.Errorf("key for epoch %d created %v, want the epoch start", ep, k.Created)
			}
		}
	}
	check(0)
	orders := [][]int{{2, 0, 1}, {1, 2, 0}, {0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {0, 2, 1}}
	for step := 1; step <= len(orders); step++ {
		for _, i := range orders[step-1] {
			nodes[i].clock.Add(testRotate)
			if err := nodes[i].src.Reload(); err != nil {
				t.Fatalf("step %d: node %d: %v", step, i, err)
			}
			if nodes[i].src.Degraded() {
				t.Fatalf("step %d: node %d degraded", step, i)
			}
		}
		check(step)
	}

	// Clock skew of one epoch: a node ahead seals with a key every other
	// node already opens, and opens every key they seal with.
	ahead, behind := nodes[0], nodes[1]
	ahead.clock.Add(testRotate)
	if err := ahead.src.Reload(); err != nil {
		t.Fatal(err)
	}
	a, b := ahead.h.Ring(), behind.h.Ring()
	if k := b.Lookup(a.Current().Name); k == nil || k.Secret != a.Current().Secret {
		t.Error("a node one epoch behind cannot open the tickets of a node ahead")
	}
	if k := a.Lookup(b.Current().Name); k == nil || k.Secret != b.Current().Secret {
		t.Error("a node one epoch ahead cannot open the tickets of a node behind")
	}
}

// TestRedisStoresOnlyWrappedKeys reads what Redis holds: the wrapped value,
// never the raw key, with an expiry beyond the key's window.
func TestRedisStoresOnlyWrappedKeys(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	kekPath, kekBytes := writeKEK(t, 2)
	n := newNode(t, srv.Addr, kekPath, t0.Add(time.Minute), func(c *RedisConfig) { c.Prefix = "fleet-a/" }).start(t)
	cur := n.h.Ring().Current()
	e := epochAt(t0)
	c := newRedisClient(t, srv.Addr)
	key := sessioncache.TicketKeyKey("fleet-a/", e)
	val, err := c.Get(context.Background(), key).Bytes()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if len(val) != wrappedSize {
		t.Fatalf("stored %d bytes, want %d", len(val), wrappedSize)
	}
	aead, err := newKEK(kekBytes)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := aead.Open(nil, val[1:1+nonceSize], val[1+nonceSize:], wrapAdditionalData(e))
	if err != nil {
		t.Fatalf("the stored value does not open with the KEK: %v", err)
	}
	raw := plain[NameSize:]
	if bytes.Contains(val, raw) || bytes.Contains(val, cur.Name[:]) || bytes.Contains(val, cur.Secret[:]) {
		t.Error("Redis holds raw key material")
	}
	if derived, _ := DeriveSecret(raw); derived != cur.Secret || !bytes.Equal(plain[:NameSize], cur.Name[:]) {
		t.Error("the stored key is not the key the node seals with")
	}
	// The value is bound to its epoch.
	if _, err := unwrapEpochKey(aead, val, e+1, time.Time{}); !errors.Is(err, ErrUnwrap) {
		t.Errorf("value opened under another epoch: %v", err)
	}
	ttl, err := c.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Needed until the end of epoch e+past+1 (a node one epoch behind).
	if minTTL := t0.Add(time.Duration(testPast+2) * testRotate).Sub(n.clock.Now()); ttl < minTTL {
		t.Errorf("expiry %v, want at least %v", ttl, minTTL)
	}
	// The next epoch's key is already there.
	if err := c.Get(context.Background(), sessioncache.TicketKeyKey("fleet-a/", e+1)).Err(); err != nil {
		t.Errorf("next epoch's key not created ahead: %v", err)
	}
}

func TestRedisWrongKEK(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	kek1, _ := writeKEK(t, 3)
	kek2, _ := writeKEK(t, 4)
	newNode(t, srv.Addr, kek1, t0.Add(time.Minute)).start(t)

	other := newNode(t, srv.Addr, kek2, t0.Add(2*time.Minute))
	err := other.src.Start(context.Background())
	if !errors.Is(err, ErrUnwrap) {
		t.Fatalf("Start with another KEK = %v, want ErrUnwrap", err)
	}
	if other.h.Ring() != nil {
		t.Error("a node with the wrong KEK published a ring")
	}
}

func TestRedisTamperedValueIsNotUsed(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 5)
	n := newNode(t, srv.Addr, kek, t0.Add(time.Minute)).start(t)
	e := epochAt(t0)
	c := newRedisClient(t, srv.Addr)
	// Plant a forged value for epoch e+2 before any node creates it.
	forged := bytes.Repeat([]byte{wrapVersion}, wrappedSize)
	if err := c.Set(context.Background(), sessioncache.TicketKeyKey("", e+2), forged, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	n.clock.Add(testRotate)
	err := n.src.Reload()
	if !errors.Is(err, ErrUnwrap) || !n.src.Degraded() {
		t.Fatalf("Reload with a forged value = %v (degraded %v), want ErrUnwrap", err, n.src.Degraded())
	}
	r := n.h.Ring()
	if keyEpoch(r.Current()) != e+1 {
		t.Errorf("sealing with epoch %d, want %d", keyEpoch(r.Current()), e+1)
	}
	for _, k := range r.keys {
		if keyEpoch(k) == e+2 {
			t.Error("the forged key is in the ring")
		}
	}
}

func TestRedisKEKFileChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	writeFile(t, open, rawKeys(KEKSize, 1, 1), 0o644)
	short := filepath.Join(dir, "short")
	writeFile(t, short, rawKeys(31, 1, 1), 0o600)
	tests := []struct {
		name, path, wantErr string
	}{
		{"readable by others", open, "chmod 600"},
		{"wrong size", short, "is 31 bytes: want exactly 32"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, "127.0.0.1:1", tt.path, t0)
			err := n.src.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Start = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestRedisOutage stops Redis under a running node: the node keeps its ring,
// reports degraded, still rotates into the epoch it fetched ahead, and
// recovers when Redis is back, restoring the keys Redis lost.
func TestRedisOutage(t *testing.T) {
	// Not parallel: it stops its server, whose port a parallel test's new
	// server could then take.
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 6)
	n := newNode(t, srv.Addr, kek, t0.Add(10*time.Minute)).start(t)
	before := n.h.Ring()
	next := before.Lookup(before.keys[1].Name)
	e := epochAt(t0)

	srv.Stop()
	err := n.src.Reload()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Reload with Redis down = %v, want ErrUnavailable", err)
	}
	if !n.src.Degraded() || n.src.Status().Err == nil {
		t.Error("not degraded with Redis down")
	}
	if n.h.Ring() != before {
		t.Error("the ring changed while Redis was down in the same epoch")
	}

	// Crossing an epoch boundary during the outage uses the key fetched
	// ahead: no stall, no node-local key.
	n.clock.Add(testRotate)
	if err := n.src.Reload(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Reload = %v, want ErrUnavailable", err)
	}
	if cur := n.h.Ring().Current(); cur != next || keyEpoch(cur) != e+1 {
		t.Fatalf("after the boundary: sealing with epoch %d, want the pre-fetched key of %d", keyEpoch(cur), e+1)
	}

	srv.Restart() // empty: no persistence
	var rerr error
	for range 3 { // the pool may hand out one dead connection first
		if rerr = n.src.Reload(); rerr == nil {
			break
		}
	}
	if rerr != nil || n.src.Degraded() {
		t.Fatalf("after restart: %v, degraded %v", rerr, n.src.Degraded())
	}
	if n.h.Ring().Current() != next {
		t.Error("recovery changed the sealing key")
	}
	// The node wrote its keys back, so a node starting now agrees.
	fresh := newNode(t, srv.Addr, kek, n.clock.Now().Add(time.Minute)).start(t)
	if sig(fresh.h.Ring()) != sig(n.h.Ring()) {
		t.Errorf("a new node disagrees after the restart:\n%s\nvs\n%s", sig(fresh.h.Ring()), sig(n.h.Ring()))
	}
}

// TestRedisRecoversByItself leaves recovery to the background loop.
func TestRedisRecoversByItself(t *testing.T) {
	// Not parallel: it stops its server, whose port a parallel test's new
	// server could then take.
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 7)
	n := newNode(t, srv.Addr, kek, t0.Add(10*time.Minute), func(c *RedisConfig) {
		c.RefreshEvery = 20 * time.Millisecond
		c.Timeout = 500 * time.Millisecond
	})
	n.src.retryMin, n.src.retryMax = 5*time.Millisecond, 20*time.Millisecond
	n.start(t)
	before := n.h.Ring()

	srv.Stop()
	waitFor(t, n.refreshes, "a failed refresh", func(err error) bool { return errors.Is(err, ErrUnavailable) })
	if !n.src.Degraded() || n.h.Ring() != before {
		t.Fatal("want degraded with the last ring kept")
	}
	srv.Restart()
	waitFor(t, n.refreshes, "a successful refresh", func(err error) bool { return err == nil })
	if n.src.Degraded() || n.h.Ring() != before {
		t.Fatal("want recovered on the same ring")
	}
}

// TestRedisDownAtStart starts on a node-local key, then moves to the shared
// keys while the local key keeps opening what it sealed.
func TestRedisDownAtStart(t *testing.T) {
	// Not parallel: it stops its server, whose port a parallel test's new
	// server could then take.
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 8)
	srv.Stop()
	n := newNode(t, srv.Addr, kek, t0.Add(10*time.Minute)).start(t)
	if !n.src.Degraded() || n.h.Ring().Len() != 1 {
		t.Fatalf("want degraded on a single local key, got degraded %v, %d keys", n.src.Degraded(), n.h.Ring().Len())
	}
	local := n.h.Ring().Current()

	srv.Restart()
	var err error
	for range 3 {
		if err = n.src.Reload(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	r := n.h.Ring()
	if keyEpoch(r.Current()) != epochAt(t0) || r.Current() == local {
		t.Error("not sealing with the shared key after recovery")
	}
	if r.Lookup(local.Name) != local {
		t.Error("the local key no longer opens its tickets")
	}
	// It retires once its tickets have expired.
	n.clock.Add(time.Duration(testPast+1) * testRotate)
	if err := n.src.Reload(); err != nil {
		t.Fatal(err)
	}
	if n.h.Ring().Lookup(local.Name) != nil {
		t.Error("the local key outlived the session lifetime")
	}
}

// TestRedisDataLossReplacement: Redis loses its data and another node
// creates a new key for the current epoch before this one writes its own
// back. The stored key wins, and the old one still opens.
func TestRedisDataLossReplacement(t *testing.T) {
	// Not parallel: it stops its server, whose port a parallel test's new
	// server could then take.
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 9)
	a := newNode(t, srv.Addr, kek, t0.Add(10*time.Minute)).start(t)
	old := a.h.Ring().Current()

	srv.Restart()
	b := newNode(t, srv.Addr, kek, t0.Add(20*time.Minute)).start(t)
	var err error
	for range 3 {
		if err = a.src.Reload(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := a.h.Ring(), b.h.Ring()
	if ra.Current().Name != rb.Current().Name || ra.Current().Secret != rb.Current().Secret {
		t.Error("the nodes seal with different keys")
	}
	if ra.Lookup(old.Name) != old {
		t.Error("the replaced key no longer opens what it sealed")
	}
}

// TestRedisClockStepsBack: keys ahead of the window leave the ring when the
// clock steps back, and are fetched afresh (never republished zeroed) when it
// moves forward again.
func TestRedisClockStepsBack(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 10)
	n := newNode(t, srv.Addr, kek, t0.Add(10*time.Minute))
	sched := &manualSchedule{}
	n.h.schedule = sched.schedule
	n.start(t)

	n.clock.Add(testRotate)
	if err := n.src.Reload(); err != nil {
		t.Fatal(err)
	}
	n.clock.Add(-testRotate)
	if err := n.src.Reload(); err != nil {
		t.Fatal(err)
	}
	if keyEpoch(n.h.Ring().Current()) != epochAt(t0) {
		t.Fatal("did not follow the clock back")
	}
	sched.run() // the key of epoch e+2 left the ring: zeroed now
	n.clock.Add(testRotate)
	if err := n.src.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, k := range n.h.Ring().keys {
		if isZero(k) {
			t.Errorf("key for epoch %d is zeroed but in the ring", keyEpoch(k))
		}
	}
	if got := n.h.Ring().Len(); got != 4 {
		t.Errorf("ring has %d keys, want 4 (epochs e-1..e+2)", got)
	}
}

func TestClosedSourcesRefuse(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t)
	kek, _ := writeKEK(t, 11)
	rn := newNode(t, srv.Addr, kek, t0).start(t)
	path := filepath.Join(t.TempDir(), "k")
	writeFile(t, path, rawKeys(48, 1, 1), 0o600)
	fs, _, _ := startFileSource(t, FileConfig{Paths: []string{path}})
	gs, err := NewGenerateSource(NewHolder(HolderConfig{}), GenerateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		src  Source
		call func() error
	}{
		{"redis", rn.src, rn.src.Reload},
		{"file", fs, fs.Reload},
		{"generate", gs, gs.Rotate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.src.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tt.call(); !errors.Is(err, ErrClosed) {
				t.Errorf("after Close: %v, want ErrClosed", err)
			}
			if err := tt.src.Start(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("Start after Close: %v, want ErrClosed", err)
			}
			if st := tt.src.Status(); st.Source != tt.name {
				t.Errorf("Status().Source = %q", st.Source)
			}
		})
	}
}
