package stateful

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

// Tests of the per-connection hooks (Conn, #12) against real servers.

var errLeave = errors.New("test client leaves before its Finished")

// leaving returns a copy of cli that aborts its handshake after reading the
// server's flight, before sending its Finished, holding the session of
// resume (none if nil).
func leaving(cli *tls.Config, resume *tls.ClientSessionState) *tls.Config {
	c := cli.Clone()
	c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	if resume != nil {
		c.ClientSessionCache.Put(tlstest.ServerName, resume)
	}
	c.VerifyConnection = func(tls.ConnectionState) error { return errLeave }
	return c
}

// redisKeys counts the keys under prefix in Redis, with SCAN.
func redisKeys(tb testing.TB, rdb *goredis.Client, prefix string) int {
	tb.Helper()
	keys, err := rdb.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		tb.Fatal(err)
	}
	return len(keys)
}

// TestAbortedHandshakesStoreNothing: crypto/tls issues a TLS 1.3 ticket
// (and a TLS 1.2 ticket on resumption) before it reads the client's
// Finished. Clients that leave before their Finished, on full and resumed
// handshakes, must leave no key in Redis. (A TLS 1.2 resumption re-issues
// the stored handle unless single use consumes it: then a fresh session
// is parked, and dropped.)
func TestAbortedHandshakesStoreNothing(t *testing.T) {
	t.Parallel()
	srv, store := startRedisTimeout(t, loadedCITimeout)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	l := tlstest.NewLoopback(t)
	const aborted = 20
	for _, v := range tlstest.Versions {
		for _, singleUse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/single_use=%v", v.Name, singleUse), func(t *testing.T) {
				testAborted(t, l, store, rdb, v.Version, singleUse, aborted)
			})
		}
	}
}

// testAborted is one case of TestAbortedHandshakesStoreNothing.
func testAborted(t *testing.T, l *tlstest.Loopback, store sessioncache.Store, rdb *goredis.Client, version uint16, singleUse bool, aborted int) {
	prefix := fmt.Sprintf("aborted-%x-%v/", version, singleUse)
	n := newNode(t, Config{Mode: resumption.ModeRedis, Store: store, Prefix: prefix, SingleUse: singleUse, Timeout: loadedCITimeout}, version)
	cache := tlstest.NewRecordingCache()
	cli := tlstest.ClientConfig(t, version, cache)
	n.connect(t, l, cli)
	if got := redisKeys(t, rdb, prefix); got != 1 {
		t.Fatalf("a completed handshake left %d keys; want 1", got)
	}
	_, session, _ := cache.Last(t)
	issued := 0
	for i := range aborted {
		resume := session
		if i%2 == 0 {
			resume = nil // a full handshake
		}
		c, done := n.conn()
		var wrapped bool
		wrap := c.WrapSession
		c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
			wrapped = true
			return wrap(cs, ss)
		}
		cs, cerr, serr := l.Handshake(t, leaving(cli, resume), c, done)
		if !errors.Is(cerr, errLeave) || serr == nil {
			t.Fatalf("aborted handshake %d: client %v, server %v; want both to fail", i, cerr, serr)
		}
		if resume != nil && !cs.DidResume {
			t.Fatalf("aborted handshake %d did not resume", i)
		}
		if wrapped {
			issued++
		}
	}
	n.flush(t)
	if got := redisKeys(t, rdb, prefix); got != 1 {
		t.Fatalf("%d aborted handshakes (%d issued a ticket) left %d keys; want 1, the completed handshake's", aborted, issued, got-1)
	}
	if version == tls.VersionTLS13 && issued != aborted || version == tls.VersionTLS12 && issued != aborted/2 {
		t.Fatalf("%d aborted handshakes issued a ticket; the test does not exercise what it claims", issued)
	}
	wantDropped, wantReissued := issued, 0
	if version == tls.VersionTLS12 && !singleUse {
		wantDropped, wantReissued = 0, issued
	}
	if got := n.metric(t, "edgeproxy_session_commits_total", "result", "dropped"); got != float64(wantDropped) {
		t.Fatalf("dropped commits = %v; want %d", got, wantDropped)
	}
	if got := n.metric(t, "edgeproxy_session_commits_total", "result", "reissued"); got != float64(wantReissued) {
		t.Fatalf("reissued = %v; want %d", got, wantReissued)
	}
	if got := n.metric(t, "edgeproxy_resumption_handshakes_total", "result", resumption.HandshakeFailed); got != float64(aborted) {
		t.Fatalf("failed handshakes = %v; want %d", got, aborted)
	}
	// The aborts did not harm the session nor the commit path.
	if !n.connect(t, l, cli).DidResume {
		t.Fatal("the completed handshake's session did not resume after the aborts")
	}
	// A resumption stores a new session, except in TLS 1.2 (the
	// handle is re-issued); single use deletes the resumed one.
	want := 2
	if singleUse || version == tls.VersionTLS12 {
		want = 1
	}
	if got := redisKeys(t, rdb, prefix); got != want {
		t.Fatalf("%d keys after a completed resumption; want %d", got, want)
	}
}

// TestTLS12StoredBeforeTheClientHasIt: a TLS 1.2 client holds its ticket
// when its handshake returns, before the server's HandshakeDone, and may
// reconnect to another node at once. A full handshake's session is
// therefore in the store before the server's Finished, and a resumption
// re-issues the stored handle without a write. (TLS 1.3 clients read
// their ticket after the handshake; see TestCommitWindow.)
func TestTLS12StoredBeforeTheClientHasIt(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			_, store := kind.startTimeout(t, loadedCITimeout)
			rec := storetest.NewRecorder(store)
			nodes := newFleet(t, 2, Config{Mode: kind.mode, Store: rec, Timeout: loadedCITimeout}, tls.VersionTLS12)
			l := tlstest.NewLoopback(t)
			cache := tlstest.NewRecordingCache()
			cli := tlstest.ClientConfig(t, tls.VersionTLS12, cache)
			var handles [][]byte
			for i := range 6 {
				n := nodes[i%2]
				cc, sc := l.Pair(t)
				c, done := n.conn()
				srvDone := make(chan error, 1)
				go func() {
					srv := tls.Server(sc, c)
					err := srv.Handshake()
					done(err)
					srv.Close()
					srvDone <- err
				}()
				tc := tls.Client(cc, cli)
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				if tc.ConnectionState().DidResume != (i > 0) {
					t.Fatalf("connection %d: DidResume = %v", i, !(i > 0))
				}
				// The client has its ticket; the server may not have
				// returned from its handshake yet.
				_, _, h := cache.Last(t)
				if _, err := store.Get(context.Background(), n.s.storeKey(h[:idLen])); err != nil {
					t.Fatalf("connection %d: the client holds a ticket the store does not have: %v", i, err)
				}
				handles = append(handles, h)
				tc.Close()
				if err := <-srvDone; err != nil {
					t.Fatal(err)
				}
				n.flush(t)
			}
			for i, h := range handles[1:] {
				if !bytes.Equal(h, handles[0]) {
					t.Fatalf("resumption %d issued a new handle; want the stored one re-issued", i+1)
				}
			}
			if got := rec.Count(storetest.OpPut); got != 1 {
				t.Fatalf("%d store puts for one full handshake and 5 resumptions; want 1", got)
			}
		})
	}
}

// TestOneLookupPerClientHello sends ClientHellos with several PSK
// identities (crypto/tls tries at most 5): five unknown handles cost one
// store GET, not five; a malformed identity first does not use up the one
// lookup.
func TestOneLookupPerClientHello(t *testing.T) {
	t.Parallel()
	_, store := startRedisTimeout(t, loadedCITimeout)
	rec := storetest.NewRecorder(store)
	n := newNode(t, Config{Mode: resumption.ModeRedis, Store: rec, Timeout: loadedCITimeout}, tls.VersionTLS13)
	l := tlstest.NewLoopback(t)
	handles := func(k int) [][]byte {
		var ids [][]byte
		for range k {
			h := make([]byte, handleLen)
			rand.Read(h)
			ids = append(ids, h)
		}
		return ids
	}
	for i, tt := range []struct {
		ids       [][]byte
		miss, bad float64
	}{
		{handles(5), 5, 0},
		{append([][]byte{[]byte("short")}, handles(4)...), 4, 1},
	} {
		gets := rec.Count(storetest.OpGet)
		miss := n.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultMiss)
		bad := n.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultBad)
		c, done := n.conn()
		if err := l.Raw(t, tlstest.PSKClientHello(t, tt.ids...), c, done); err == nil {
			t.Fatal("a client that never sent its Finished completed a handshake")
		}
		if got := rec.Count(storetest.OpGet) - gets; got != 1 {
			t.Fatalf("ClientHello %d: %d store GETs for %d identities; want 1", i, got, len(tt.ids))
		}
		// crypto/tls tried every identity.
		miss = n.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultMiss) - miss
		bad = n.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultBad) - bad
		if miss != tt.miss || bad != tt.bad {
			t.Fatalf("ClientHello %d: %v misses, %v bad; want %v, %v", i, miss, bad, tt.miss, tt.bad)
		}
	}
}

// corrupt returns a copy of a client's session whose secret is flipped: a
// crypto/tls client resuming with it presents the real handle but computes
// a wrong TLS 1.3 binder, or (TLS 1.2) cannot verify the server's Finished
// and leaves before sending its own. It stands for an on-path attacker who
// replays a handle it saw in the clear.
func corrupt(tb testing.TB, cs *tls.ClientSessionState) *tls.ClientSessionState {
	tb.Helper()
	ticket, state, err := cs.ResumptionState()
	if err != nil {
		tb.Fatal(err)
	}
	b, err := state.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	secret := testSecret(tb, b)
	for i := range secret {
		secret[i] ^= 0xff
	}
	bad, err := tls.ParseSessionState(b)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := tls.NewResumptionState(ticket, bad)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestReplayDoesNotConsume: in single-use mode a replayed handle whose
// handshake fails (a bogus TLS 1.3 binder, a TLS 1.2 client that cannot
// finish) must not consume the session: its owner still resumes, once.
func TestReplayDoesNotConsume(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			_, store := kind.startTimeout(t, loadedCITimeout)
			rec := storetest.NewRecorder(store)
			l := tlstest.NewLoopback(t)
			for _, v := range tlstest.Versions {
				t.Run(v.Name, func(t *testing.T) {
					nodes := newFleet(t, 2, Config{Mode: kind.mode, Store: rec, Prefix: v.Name + "/", SingleUse: true, Timeout: loadedCITimeout}, v.Version)
					a, b := nodes[0], nodes[1]
					cache := tlstest.NewRecordingCache()
					cli := tlstest.ClientConfig(t, v.Version, cache)
					a.connect(t, l, cli)
					cacheKey, session, handle := cache.Last(t)
					deletes := rec.Count(storetest.OpDelete)

					// A real client with the handle and a wrong secret, on both nodes.
					for _, n := range nodes {
						attacker := cli.Clone()
						attacker.ClientSessionCache = tls.NewLRUClientSessionCache(1)
						attacker.ClientSessionCache.Put(tlstest.ServerName, corrupt(t, session))
						c, done := n.conn()
						// It fails while the session exists; once consumed it
						// would get a full handshake, caught below.
						if cs, cerr, serr := l.Handshake(t, attacker, c, done); cs.DidResume && cerr == nil && serr == nil {
							t.Fatal("a replay with a wrong secret resumed")
						}
					}
					// TLS 1.3: a raw ClientHello with the handle and a zero binder.
					if v.Version == tls.VersionTLS13 {
						c, done := b.conn()
						err := l.Raw(t, tlstest.PSKClientHello(t, handle), c, done)
						if err == nil || !strings.Contains(err.Error(), "binder") {
							t.Fatalf("replay with a zero binder: server %v; want a binder error", err)
						}
					}
					if got := rec.Count(storetest.OpDelete) - deletes; got != 0 {
						t.Fatalf("failed replays made %d store deletes; want 0", got)
					}
					opened := a.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultOpened) +
						b.metric(t, "edgeproxy_resumption_unwrap_total", "result", resumption.ResultOpened)
					resumed := a.metric(t, "edgeproxy_resumption_handshakes_total", "result", resumption.HandshakeResumed) +
						b.metric(t, "edgeproxy_resumption_handshakes_total", "result", resumption.HandshakeResumed)
					if opened < 2 || resumed != 0 {
						t.Fatalf("opened %v, resumed %v; want the replays opened but not counted as resumptions", opened, resumed)
					}

					// The owner resumes, on the other node; that consumes it.
					if !b.connect(t, l, cli).DidResume {
						t.Fatal("the replays burnt the client's session")
					}
					if got := b.metric(t, "edgeproxy_session_single_use_consumed_total", "result", "ok"); got != 1 {
						t.Fatalf("consumed = %v; want 1", got)
					}
					cache.Put(cacheKey, session)
					if a.connect(t, l, cli).DidResume {
						t.Fatal("a consumed single-use session resumed again")
					}
				})
			}
		})
	}
}

// TestCommitOverflow holds the store writer in a put: commits beyond the
// queue are counted as overflow without blocking HandshakeDone, and their
// sessions still resume on this node.
func TestCommitOverflow(t *testing.T) {
	t.Parallel()
	s, rec, f, _, reg := newFaulty(t, Config{CommitQueue: 1, CommitWorkers: 1, CommitAsync: true})
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(op storetest.Op) {
		if op == storetest.OpPut {
			once.Do(func() {
				close(entered)
				<-release
			})
		}
	}
	f.hook.Store(&hook)
	ss := tlstest.Session(t, tls.VersionTLS13)
	commit := func() []byte {
		c := s.NewConn()
		h, _, err := c.WrapSessionID(tls.ConnectionState{}, ss)
		if err != nil {
			t.Fatal(err)
		}
		c.HandshakeDone(nil)
		return h
	}
	var handles [][]byte
	handles = append(handles, commit())
	<-entered // the writer holds the first
	for range 4 {
		handles = append(handles, commit()) // one queued, three overflow
	}
	commits := func(result string) float64 {
		return metricValue(t, reg, "edgeproxy_session_commits_total", "result", result)
	}
	if got := commits("overflow"); got != 3 {
		t.Fatalf("overflow = %v; want 3", got)
	}
	if got := metricValue(t, reg, "edgeproxy_session_commit_queue"); got != 1 {
		t.Fatalf("commit_queue = %v; want 1", got)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, puts := commits("ok"), rec.Count(storetest.OpPut); got != 2 || puts != 2 {
		t.Fatalf("ok commits = %v, store puts = %d; want 2 each", got, puts)
	}
	for i, h := range handles {
		mustResume(t, s, h) // overflowed: local-only, on this node
		if i >= 2 {
			if _, err := rec.Store.Get(context.Background(), s.storeKey(h[:idLen])); !errors.Is(err, sessioncache.ErrMiss) {
				t.Fatalf("overflowed session %d is in the store: %v", i, err)
			}
		}
	}
	// Closed, the writers are gone: commits reach Local only.
	s.Close()
	h := commit()
	mustResume(t, s, h)
	if got := commits("overflow"); got != 4 {
		t.Fatalf("overflow after Close = %v; want 4", got)
	}
}

// TestCommitWindow measures the window the background writers leave: the
// time from a completed handshake to the store's acknowledgement of its
// session, during which a client reconnecting to another node gets a full
// handshake. It logs the figures. It asserts that every commit succeeded,
// that no handshake failed, and that when HandshakeDone waits for the
// acknowledgement (the default) a client reconnecting the moment it read
// the server's first byte never misses.
func TestCommitWindow(t *testing.T) {
	// Not parallel: the figures are the point.
	const (
		isolated    = 500
		burst       = 2000
		concurrency = 8
		reconnects  = 200
	)
	ss := tlstest.Session(t, tls.VersionTLS13)
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			_, store := kind.startTimeout(t, loadedCITimeout)
			ack := &ackStore{Store: store, at: make(map[string]time.Time)}
			var st sessioncache.Store = ack
			if _, ok := store.(batchPutter); ok {
				st = &ackBatchStore{ack}
			}
			n := newNode(t, Config{Mode: kind.mode, Store: st, Timeout: loadedCITimeout, CommitAsync: true}, tls.VersionTLS13)

			// Commit delay, driving Conns directly: one at a time (the
			// store idle), then a burst from several goroutines.
			var mu sync.Mutex
			sentAt := make(map[string]time.Time)
			commit := func() {
				c := n.s.NewConn()
				h, _, err := c.WrapSessionID(tls.ConnectionState{}, ss)
				if err != nil {
					t.Error(err)
					return
				}
				at := time.Now()
				c.HandshakeDone(nil)
				mu.Lock()
				sentAt[n.s.storeKey(h[:idLen])] = at
				mu.Unlock()
			}
			delays := func() []time.Duration {
				ack.mu.Lock()
				defer ack.mu.Unlock()
				var d []time.Duration
				for k, at := range sentAt {
					d = append(d, ack.at[k].Sub(at))
				}
				clear(sentAt)
				return d
			}
			for range isolated {
				commit()
				n.flush(t)
			}
			t.Logf("%s: commit delay (HandshakeDone to store ack), %d commits one at a time: %s", kind.name, isolated, percentiles(delays()))
			var wg sync.WaitGroup
			for range concurrency {
				wg.Go(func() {
					for range burst / concurrency {
						commit()
					}
				})
			}
			wg.Wait()
			n.flush(t)
			t.Logf("%s: commit delay, a burst of %d commits from %d goroutines (queueing included): %s", kind.name, burst, concurrency, percentiles(delays()))
			if got := n.metric(t, "edgeproxy_session_commits_total", "result", "ok"); got != isolated+burst {
				t.Fatalf("ok commits = %v (error %v, overflow %v); want %d", got,
					n.metric(t, "edgeproxy_session_commits_total", "result", "error"),
					n.metric(t, "edgeproxy_session_commits_total", "result", "overflow"), isolated+burst)
			}

			// Real clients that reconnect to another node the moment they
			// read the server's first byte (and with it the ticket).
			l := tlstest.NewLoopback(t)
			for _, async := range []bool{false, true} {
				cfg := Config{Mode: kind.mode, Store: store, Timeout: loadedCITimeout, CommitAsync: async}
				a, b := newNode(t, cfg, tls.VersionTLS13), newNode(t, cfg, tls.VersionTLS13)
				missed := 0
				for range reconnects {
					cli := newClient(t, tls.VersionTLS13)
					c, done := a.conn()
					l.ConnectDone(t, cli, c, done)
					c, done = b.conn()
					if !l.ConnectDone(t, cli, c, done).DidResume {
						missed++
					}
				}
				t.Logf("%s, CommitAsync %v: %d of %d clients reconnecting at once to another node missed (full handshake, none failed)", kind.name, async, missed, reconnects)
				if !async && missed != 0 {
					t.Errorf("%s: %d clients missed although HandshakeDone waited for the store", kind.name, missed)
				}
			}
		})
	}
}

func percentiles(d []time.Duration) string {
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v, p90 %v, p99 %v, max %v", q(.5), q(.9), q(.99), q(1))
}

// ackStore records when the store acknowledged each put.
type ackStore struct {
	sessioncache.Store
	mu sync.Mutex
	at map[string]time.Time
}

func (a *ackStore) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	err := a.Store.Put(ctx, key, val, ttl)
	now := time.Now()
	if err == nil {
		a.mu.Lock()
		a.at[key] = now
		a.mu.Unlock()
	}
	return err
}

// ackBatchStore is ackStore for a store that pipelines.
type ackBatchStore struct{ *ackStore }

func (a *ackBatchStore) PutBatch(ctx context.Context, entries []sessioncache.Entry, ttl time.Duration) error {
	err := a.Store.(batchPutter).PutBatch(ctx, entries, ttl)
	now := time.Now()
	if err == nil {
		a.mu.Lock()
		for _, e := range entries {
			a.at[e.Key] = now
		}
		a.mu.Unlock()
	}
	return err
}
