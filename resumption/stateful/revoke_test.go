package stateful

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
)

// ticket is a client's session saved to be offered again, whatever the
// client was given since.
type ticket struct {
	cache *tlstest.RecordingCache
	cli   *tls.Config
	key   string
	state *tls.ClientSessionState
	id    string // its SessionID
}

// newTicket makes a client's first connection to n and saves the session
// n issued.
func newTicket(c connector, n *node) *ticket {
	c.tb.Helper()
	t := &ticket{cache: tlstest.NewRecordingCache()}
	t.cli = tlstest.ClientConfig(c.tb, tls.VersionTLS13, t.cache)
	c.expect("first", t.cli, n, false)
	var h []byte
	t.key, t.state, h = t.cache.Last(c.tb)
	t.id = n.s.SessionID(h)
	return t
}

// offer offers the saved session to n, and reports whether n resumed it
// and whether it read its local copy to do so (a read-through).
func (t *ticket) offer(c connector, n *node) (resumed, readThrough bool) {
	c.tb.Helper()
	t.cache.Put(t.key, t.state)
	_, local := storeGets(c.tb, n)
	resumed = n.connect(c.tb, c.l, t.cli).DidResume
	_, after := storeGets(c.tb, n)
	return resumed, after != local
}

// TestRevokeStorePaused: a revocation while Redis does not answer fails
// with ErrRevokeIncomplete (the admin API's 503), the revoking node drops
// its copy regardless, and no node reads a copy it verified before the
// outage through afterwards: a node whose poll failed moves to a new
// epoch, so it reads the store again once it answers. Once a retried
// Revoke succeeded, no node resumes the session (#12).
func TestRevokeStorePaused(t *testing.T) {
	// Not parallel: it pauses a server (see TestStoreHung).
	srv, store := startRedisTimeout(t, loadedCITimeout)
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	cfg := Config{Mode: resumption.ModeRedis, Store: store, Timeout: loadedCITimeout, ReadThrough: true, RevocationPoll: testPoll}
	nodes := newFleet(t, 2, cfg, tls.VersionTLS13)
	a, b := nodes[0], nodes[1]
	waitPolled(t, a)
	waitPolled(t, b)
	onA, onB := newTicket(c, a), newTicket(c, b) // each node holds its copy
	if resumed, local := onA.offer(c, a); !resumed || !local {
		t.Fatalf("before: resumed %v, read through %v; want both", resumed, local)
	}

	epoch := a.s.rev.current()
	srv.Pause()
	paused := true
	t.Cleanup(func() {
		if paused {
			srv.Resume()
		}
	})
	for _, tk := range []*ticket{onA, onB} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.s.Revoke(ctx, tk.id)
		cancel()
		if !errors.Is(err, ErrRevokeIncomplete) || !strings.Contains(err.Error(), "retry") {
			t.Fatalf("Revoke with the store paused = %v; want ErrRevokeIncomplete", err)
		}
	}
	if resumed, _ := onB.offer(c, b); resumed {
		t.Fatal("store paused: the revoking node resumed the session from its copy")
	}
	waitEpoch(t, a, epoch) // a's poll failed
	epoch = a.s.rev.current()
	srv.Resume()
	paused = false
	waitEpoch(t, a, epoch) // a's first poll since
	// The delete may or may not have reached Redis (it was sent before
	// the pause): a resumes the session only from the store.
	if _, local := onA.offer(c, a); local {
		t.Fatal("after the outage: a read its copy from before it through")
	}

	for _, tk := range []*ticket{onA, onB} {
		if err := b.s.Revoke(context.Background(), tk.id); err != nil {
			t.Fatalf("retried Revoke: %v", err)
		}
	}
	waitEpoch(t, a, a.s.rev.current())
	for _, n := range nodes {
		for _, tk := range []*ticket{onA, onB} {
			if resumed, local := tk.offer(c, n); resumed || local {
				t.Fatalf("revoked: resumed %v, read through %v; want neither", resumed, local)
			}
		}
	}
}

// TestRevokeGenerationWriteFails: Redis deletes the session but refuses
// the new revocation generation (out of memory: DEL is allowed, SET is
// not). Revoke reports it as incomplete, naming the danger; once Redis
// takes writes again, the retried Revoke succeeds and the node that held a
// copy stops resuming it within its next poll (#12).
func TestRevokeGenerationWriteFails(t *testing.T) {
	t.Parallel()
	srv, store := startRedisTimeout(t, loadedCITimeout)
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { admin.Close() })
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	cfg := Config{Mode: resumption.ModeRedis, Store: store, Timeout: loadedCITimeout, ReadThrough: true, RevocationPoll: testPoll}
	nodes := newFleet(t, 2, cfg, tls.VersionTLS13)
	a, b := nodes[0], nodes[1]
	waitPolled(t, a)
	tk := newTicket(c, a)

	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	err := b.s.Revoke(ctx, tk.id)
	if !errors.Is(err, ErrRevokeIncomplete) || !strings.Contains(err.Error(), "local copies") {
		t.Fatalf("Revoke, generation refused = %v; want ErrRevokeIncomplete naming local copies", err)
	}
	if n, err := admin.Exists(ctx, a.s.storeKey(mustHandleID(t, tk))).Result(); err != nil || n != 0 {
		t.Fatalf("session still in Redis (%d, %v): the delete should have passed", n, err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.s.Revoke(ctx, tk.id); err != nil {
		t.Fatalf("retried Revoke: %v", err)
	}
	waitEpoch(t, a, a.s.rev.current())
	if resumed, local := tk.offer(c, a); resumed || local {
		t.Fatalf("revoked: resumed %v, read through %v; want neither", resumed, local)
	}
}

// mustHandleID returns the id part of the handle tk's client holds.
func mustHandleID(tb testing.TB, tk *ticket) []byte {
	tb.Helper()
	ticket, _, err := tk.state.ResumptionState()
	if err != nil || len(ticket) != handleLen {
		tb.Fatalf("client session: %d-byte ticket, %v", len(ticket), err)
	}
	return ticket[:idLen]
}
