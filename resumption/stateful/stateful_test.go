package stateful

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

var _ = &tls.Config{WrapSession: (&Backend{}).WrapSession}
var _ = &tls.Config{UnwrapSession: (&Backend{}).UnwrapSession}

var _ resumption.SessionIDer = (*Backend)(nil)

// node is one proxy node: its own Backend with its own local LRU,
// behind its own Layer, in its own tls.Config, with its own registry.
type node struct {
	s     *Backend
	local *lru.Store
	layer *resumption.Layer
	tls   *tls.Config // with the Layer's plain hooks
	reg   *prometheus.Registry
}

// conn returns a configuration for one connection with the Layer's
// per-connection hooks, as edgeproxy's listener uses, and the function to
// call when its server handshake ended.
func (n *node) conn() (*tls.Config, func(error)) {
	c, cs := n.layer.ConnConfig(n.tls)
	return c, cs.HandshakeDone
}

// connect runs one connection through the per-connection hooks, then waits
// until the session it issued is in the shared store: tests that are not
// about the commit window should not race it.
func (n *node) connect(tb testing.TB, l *tlstest.Loopback, cli *tls.Config) tls.ConnectionState {
	tb.Helper()
	c, done := n.conn()
	cs := l.ConnectDone(tb, cli, c, done)
	n.flush(tb)
	return cs
}

func (n *node) flush(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.s.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
}

// newNode builds a node on cfg (Local, Metrics and, if unset, Now
// are filled in) for one TLS version, wired through resumption.New.
func newNode(tb testing.TB, cfg Config, version uint16) *node {
	tb.Helper()
	n := &node{reg: prometheus.NewRegistry()}
	var err error
	n.local, err = lru.New(lru.Config{Now: cfg.Now})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Local = n.local
	cfg.Metrics = mustMetrics(tb, n.reg)
	n.s, err = New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.s.Close() })
	n.layer, err = resumption.New(resumption.Config{Mode: n.s.mode, Backend: n.s, Metrics: mustLayerMetrics(tb, n.reg), Now: cfg.Now, Lifetime: cfg.Lifetime})
	if err != nil {
		tb.Fatal(err)
	}
	n.tls = &tls.Config{
		Certificates: []tls.Certificate{tlstest.Cert(tb)},
		MinVersion:   version,
		MaxVersion:   version,
	}
	n.layer.Configure(n.tls)
	return n
}

// metric returns the sum of the series of name whose labels include labels
// (name, value pairs): 0 if there is none. A histogram counts its samples.
func (n *node) metric(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	return metricValue(tb, n.reg, name, labels...)
}

func metricValue(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// faults is a Recorder fault switch: while failing is set, every
// call fails with err (or context.DeadlineExceeded).
type faults struct {
	failing atomic.Bool
	err     error
	// hook, if set, runs before each call, for tests that hold a call.
	hook atomic.Pointer[func(storetest.Op)]
}

var errTestDown = errors.New("test store down")

func (f *faults) fault(op storetest.Op, _ string) error {
	if h := f.hook.Load(); h != nil {
		(*h)(op)
	}
	if f.failing.Load() {
		if f.err != nil {
			return f.err
		}
		return errTestDown
	}
	return nil
}

// newFaulty returns a shared-mode Backend on an in-process store
// behind a Recorder with faults, with a fake clock.
func newFaulty(tb testing.TB, cfg Config) (*Backend, *storetest.Recorder, *faults, *storetest.Clock, *prometheus.Registry) {
	tb.Helper()
	clk := storetest.NewClock(time.Unix(1_700_000_000, 0))
	backing, err := lru.New(lru.Config{Now: clk.Now})
	if err != nil {
		tb.Fatal(err)
	}
	faults := &faults{}
	rec := storetest.NewRecorder(backing)
	rec.Fault = faults.fault
	reg := prometheus.NewRegistry()
	cfg.Store, cfg.Now, cfg.Metrics = rec, clk.Now, mustMetrics(tb, reg)
	if cfg.Mode == "" {
		cfg.Mode = resumption.ModeRedis
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s, rec, faults, clk, reg
}

func mustWrap(tb testing.TB, s *Backend, ss *tls.SessionState) []byte {
	tb.Helper()
	h, err := s.WrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		tb.Fatal(err)
	}
	if len(h) != handleLen {
		tb.Fatalf("handle of %d bytes; want %d", len(h), handleLen)
	}
	return h
}

func mustResume(tb testing.TB, s *Backend, h []byte) {
	tb.Helper()
	ss, err := s.UnwrapSession(h, tls.ConnectionState{})
	if err != nil || ss == nil {
		tb.Fatalf("UnwrapSession = %v, %v; want the session", ss, err)
	}
}

// isStoreErr reports whether err is a store error, as the Layer sees
// it: neither resumption.ErrMiss nor resumption.ErrBad.
func isStoreErr(err error) bool {
	return err != nil && !errors.Is(err, resumption.ErrMiss) && !errors.Is(err, resumption.ErrBad)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	store := storetest.NewRecorder(nil)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero is sticky", Config{}, ""},
		{"redis", Config{Mode: resumption.ModeRedis, Store: store}, ""},
		{"shared without mode", Config{Store: store}, ""},
		{"all set", Config{Mode: resumption.ModeMemcached, Store: store, Prefix: "fleet-a/", Lifetime: time.Hour,
			Timeout: time.Millisecond, Breaker: BreakerConfig{Failures: 1, Cooldown: time.Second}}, ""},
		{"sticky with store", Config{Mode: resumption.ModeSticky, Store: store}, "resumption.mode: sticky"},
		{"redis without store", Config{Mode: resumption.ModeRedis}, `resumption.mode: "redis" needs a shared store`},
		{"tickets", Config{Mode: resumption.ModeTickets}, `resumption.mode: "tickets"`},
		{"prefix with space", Config{Prefix: "a b"}, `resumption.store.prefix: "a b"`},
		{"prefix too long", Config{Prefix: strings.Repeat("p", 220)}, "resumption.store.prefix"},
		{"negative lifetime", Config{Lifetime: -time.Second}, `resumption.session_lifetime: "-1s"`},
		{"lifetime too long", Config{Lifetime: resumption.MaxLifetime + 1}, "resumption.session_lifetime"},
		{"negative timeout", Config{Timeout: -time.Millisecond}, `resumption.store.timeout: must not be negative, got "-1ms"`},
		{"negative failures", Config{Breaker: BreakerConfig{Failures: -1}}, "resumption.store.breaker.failures"},
		{"negative cooldown", Config{Breaker: BreakerConfig{Cooldown: -1}}, "resumption.store.breaker.cooldown"},
		{"negative commit queue", Config{CommitQueue: -1}, "resumption.store.commit_queue: must not be negative, got -1"},
		{"negative commit workers", Config{CommitWorkers: -2}, "resumption.store.commit_workers: must not be negative, got -2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			s, nerr := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || nerr != nil || s == nil {
					t.Fatalf("Validate = %v, New = %v; want success", err, nerr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v; want an error containing %q", err, tt.wantErr)
			}
			if nerr == nil || s != nil {
				t.Fatalf("New = %v, %v; want the validation error", s, nerr)
			}
		})
	}
}

// TestFormat opens a stored value by the documented format with
// crypto/aes and crypto/cipher directly, and checks that neither the store
// nor the handle holds the state.
func TestFormat(t *testing.T) {
	t.Parallel()
	for _, v := range tlstest.Versions {
		t.Run(v.Name, func(t *testing.T) {
			s, rec, _, _, _ := newFaulty(t, Config{Prefix: "fleet/"})
			ss := tlstest.Session(t, v.Version)
			state, err := ss.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			h := mustWrap(t, s, ss)
			puts := rec.Calls()
			if len(puts) != 1 || puts[0].Op != storetest.OpPut {
				t.Fatalf("store calls %+v; want one put", puts)
			}
			put := puts[0]
			if put.TTL != resumption.DefaultSessionLifetime {
				t.Fatalf("put ttl %s; want the lifetime %s", put.TTL, resumption.DefaultSessionLifetime)
			}
			sid := s.SessionID(h)
			if want := "fleet/edgeproxy/v1/sess/" + sid; put.Key != want {
				t.Fatalf("key %q; want %q", put.Key, want)
			}
			if len(sid) != 32 || strings.Contains(put.Key, fmt.Sprintf("%x", h[:16])) {
				t.Fatalf("session ID %q: want 32 hex digits not derived by encoding the id", sid)
			}
			val := put.Val
			if val[0] != 0x01 || len(val) != 1+12+len(state)+16 {
				t.Fatalf("value of %d bytes, version %#x; want %d bytes, version 1", len(val), val[0], 1+12+len(state)+16)
			}
			secret := testSecret(t, state)
			for name, b := range map[string][]byte{"value": val, "handle": h} {
				if bytes.Contains(b, state[len(state)/2:]) || bytes.Contains(b, secret) {
					t.Fatalf("the %s holds the state or its secret in the clear", name)
				}
			}
			block, err := aes.NewCipher(h[16:])
			if err != nil {
				t.Fatal(err)
			}
			gcm, err := cipher.NewGCM(block)
			if err != nil {
				t.Fatal(err)
			}
			got, err := gcm.Open(nil, val[1:13], val[13:], append([]byte{0x01}, h[:16]...))
			if err != nil {
				t.Fatalf("opening by the spec: %v", err)
			}
			if !bytes.Equal(got, state) {
				t.Fatal("plaintext is not SessionState.Bytes()")
			}
			if _, err := gcm.Open(nil, val[1:13], val[13:], []byte{0x01}); err == nil {
				t.Fatal("the value opens without the id as additional data")
			}
		})
	}
}

// testSecret returns the secret field of SessionState.Bytes(): version
// (2), type (1), cipher suite (2), created_at (8), then secret<1..255>.
func testSecret(tb testing.TB, state []byte) []byte {
	tb.Helper()
	if len(state) < 14 || len(state) < 14+int(state[13]) || state[13] < 16 {
		tb.Fatalf("session state of %d bytes has no secret", len(state))
	}
	return state[14 : 14+int(state[13])]
}

func TestGarbage(t *testing.T) {
	t.Parallel()
	s, rec, _, _, _ := newFaulty(t, Config{})
	sticky, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ss := tlstest.Session(t, tls.VersionTLS13)
	for _, b := range []struct {
		name string
		s    *Backend
	}{{"shared", s}, {"sticky", sticky}} {
		h := mustWrap(t, b.s, ss)
		wrongK := append([]byte{}, h...)
		wrongK[31] ^= 1
		unknown := make([]byte, 32)
		rand.Read(unknown)
		tests := []struct {
			name     string
			identity []byte
			want     error
		}{
			{"empty", nil, resumption.ErrMiss},
			{"zero bytes", []byte{}, resumption.ErrMiss},
			{"one byte", []byte{1}, resumption.ErrBad},
			{"31 bytes", h[:31], resumption.ErrBad},
			{"33 bytes", append(append([]byte{}, h...), 0), resumption.ErrBad},
			{"a ticket", make([]byte, 200), resumption.ErrBad},
			{"unknown id", unknown, resumption.ErrMiss},
			{"right id wrong k", wrongK, resumption.ErrBad},
		}
		for _, tt := range tests {
			t.Run(b.name+"/"+tt.name, func(t *testing.T) {
				got, err := b.s.UnwrapSession(tt.identity, tls.ConnectionState{})
				if got != nil || !errors.Is(err, tt.want) {
					t.Fatalf("UnwrapSession = %v, %v; want %v", got, err, tt.want)
				}
			})
		}
		mustResume(t, b.s, h) // still intact after the wrong k
	}

	// Values in the store that Backend did not write.
	h := mustWrap(t, s, ss)
	key := s.storeKey(h[:16])
	for _, tt := range []struct {
		name string
		val  []byte
	}{
		{"empty", []byte{}},
		{"version only", []byte{1}},
		{"version 2", append([]byte{2}, make([]byte, 60)...)},
		{"garbage", bytes.Repeat([]byte{1}, 100)},
	} {
		t.Run("stored "+tt.name, func(t *testing.T) {
			if err := rec.Store.Put(context.Background(), key, tt.val, time.Hour); err != nil {
				t.Fatal(err)
			}
			got, err := s.UnwrapSession(h, tls.ConnectionState{})
			if got != nil || !errors.Is(err, resumption.ErrBad) {
				t.Fatalf("UnwrapSession = %v, %v; want resumption.ErrBad", got, err)
			}
		})
	}
}

func TestSessionIDAndRevoke(t *testing.T) {
	t.Parallel()
	s, rec, _, _, _ := newFaulty(t, Config{})
	ss := tlstest.Session(t, tls.VersionTLS12)
	h := mustWrap(t, s, ss)
	id := s.SessionID(h)
	other, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if other.SessionID(h) != id {
		t.Fatal("SessionID depends on the node")
	}
	// The identifiers the Layer gets with a session, derived with its
	// store key, are SessionID's.
	h2, wid, err := s.WrapSessionID(tls.ConnectionState{}, ss)
	if err != nil || wid != s.SessionID(h2) || wid == id {
		t.Fatalf("WrapSessionID = %q, %v; want SessionID %q of a new handle", wid, err, s.SessionID(h2))
	}
	if _, uid, err := s.UnwrapSessionID(h2, tls.ConnectionState{}); err != nil || uid != wid {
		t.Fatalf("UnwrapSessionID = %q, %v; want %q", uid, err, wid)
	}
	for _, bad := range [][]byte{nil, h[:31], append(append([]byte{}, h...), 0)} {
		if got := s.SessionID(bad); got != "" {
			t.Fatalf("SessionID of %d bytes = %q; want empty", len(bad), got)
		}
	}
	for _, bad := range []string{"", "zz", id[:30], id + "00", strings.ToUpper(id) + "x"} {
		err := s.Revoke(context.Background(), bad)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Fatalf("Revoke(%q) = %v; want an error naming it", bad, err)
		}
	}
	if err := s.Revoke(context.Background(), strings.Repeat("ab", 16)); err != nil {
		t.Fatalf("revoking an unknown session: %v", err)
	}
	mustResume(t, s, h)
	if err := s.Revoke(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnwrapSession(h, tls.ConnectionState{}); !errors.Is(err, resumption.ErrMiss) {
		t.Fatalf("after Revoke: %v; want resumption.ErrMiss", err)
	}
	// Gone from the local cache too: degraded mode does not bring it back.
	rec.Fault = func(storetest.Op, string) error { return errTestDown }
	if _, err := s.UnwrapSession(h, tls.ConnectionState{}); !isStoreErr(err) {
		t.Fatalf("after Revoke, store down: %v; want a store error", err)
	}
	if err := s.Revoke(context.Background(), id); !errors.Is(err, errTestDown) {
		t.Fatalf("Revoke with the store down = %v; want its error", err)
	}
}

// TestDegraded covers the failure paths a real server cannot produce
// on demand: an error on one op only, a timeout classification.
func TestDegraded(t *testing.T) {
	t.Parallel()
	ss := tlstest.Session(t, tls.VersionTLS13)

	t.Run("store error falls back to local", func(t *testing.T) {
		s, _, f, _, reg := newFaulty(t, Config{})
		h := mustWrap(t, s, ss)
		f.failing.Store(true)
		mustResume(t, s, h)
		other := mustWrap(t, s, ss) // put fails: local only
		mustResume(t, s, other)
		unknown := make([]byte, 32)
		if _, err := s.UnwrapSession(unknown, tls.ConnectionState{}); !isStoreErr(err) || !errors.Is(err, errTestDown) {
			t.Fatalf("unknown handle, store down: %v; want the store error", err)
		}
		for _, c := range []struct {
			name, result string
			want         float64
		}{
			{"edgeproxy_session_local_fallback_total", "hit", 2},
			{"edgeproxy_session_local_fallback_total", "miss", 1},
		} {
			if got := metricValue(t, reg, c.name, "mode", resumption.ModeRedis, "result", c.result); got != c.want {
				t.Errorf("%s{result=%s} = %v; want %v", c.name, c.result, got, c.want)
			}
		}
		if got := metricValue(t, reg, "edgeproxy_session_store_calls_total", "op", "get", "result", "error"); got != 3 {
			t.Errorf("get errors = %v; want 3", got)
		}
	})

	t.Run("put failure is not a wrap failure", func(t *testing.T) {
		s, rec, _, _, reg := newFaulty(t, Config{})
		rec.Fault = func(op storetest.Op, _ string) error {
			if op == storetest.OpPut {
				return context.DeadlineExceeded
			}
			return nil
		}
		h := mustWrap(t, s, ss)
		// The store answers (a miss) but never had it: the local-only
		// copy resumes on this node.
		mustResume(t, s, h)
		if got := metricValue(t, reg, "edgeproxy_session_local_fallback_total", "result", "local_only"); got != 1 {
			t.Errorf("local_only fallbacks = %v; want 1", got)
		}
		if got := metricValue(t, reg, "edgeproxy_session_store_calls_total", "op", "put", "result", "timeout"); got != 1 {
			t.Errorf("put timeouts = %v; want 1", got)
		}
	})

	t.Run("store miss drops a stored local copy", func(t *testing.T) {
		s, rec, f, _, _ := newFaulty(t, Config{})
		h := mustWrap(t, s, ss)
		if err := rec.Store.Delete(context.Background(), s.storeKey(h[:16])); err != nil {
			t.Fatal(err) // as another node's Revoke or an expiry would
		}
		if _, err := s.UnwrapSession(h, tls.ConnectionState{}); !errors.Is(err, resumption.ErrMiss) {
			t.Fatalf("store miss: %v; want resumption.ErrMiss", err)
		}
		f.failing.Store(true)
		if _, err := s.UnwrapSession(h, tls.ConnectionState{}); !isStoreErr(err) {
			t.Fatalf("store down after the miss: %v; want a store error (no local copy)", err)
		}
	})

	t.Run("hung store times out", func(t *testing.T) {
		clk := storetest.NewClock(time.Now())
		hung := &hungStore{}
		reg := prometheus.NewRegistry()
		s, err := New(Config{Mode: resumption.ModeMemcached, Store: hung, Timeout: time.Millisecond, Now: clk.Now, Metrics: mustMetrics(t, reg)})
		if err != nil {
			t.Fatal(err)
		}
		h := mustWrap(t, s, ss)
		mustResume(t, s, h)
		if !hung.sawDeadline.Load() {
			t.Fatal("store calls carry no deadline")
		}
		// One call each, which times out; sharedCall retries it once when
		// this goroutine itself ran late (elapsed > 1.5 × bound, common
		// with a 1 ms bound under -race on a loaded machine): 1 or 2.
		for _, op := range []string{"get", "put"} {
			if got := metricValue(t, reg, "edgeproxy_session_store_calls_total", "mode", resumption.ModeMemcached, "op", op, "result", "timeout"); got != 1 && got != 2 {
				t.Errorf("%s timeouts = %v; want 1 (2 if retried as this process's delay)", op, got)
			}
		}
	})
}

// hungStore never answers: each call waits for its ctx.
type hungStore struct{ sawDeadline atomic.Bool }

func (h *hungStore) wait(ctx context.Context) error {
	if _, ok := ctx.Deadline(); ok {
		h.sawDeadline.Store(true)
	}
	<-ctx.Done()
	return fmt.Errorf("test store: %w", ctx.Err())
}

func (h *hungStore) Get(ctx context.Context, _ string) ([]byte, error) {
	return nil, h.wait(ctx)
}
func (h *hungStore) Put(ctx context.Context, _ string, _ []byte, _ time.Duration) error {
	return h.wait(ctx)
}
func (h *hungStore) Delete(ctx context.Context, _ string) error { return h.wait(ctx) }

func TestBreaker(t *testing.T) {
	t.Parallel()
	const failures, cooldown = 3, 10 * time.Second
	s, rec, f, clk, reg := newFaulty(t, Config{Breaker: BreakerConfig{Failures: failures, Cooldown: cooldown}})
	ss := tlstest.Session(t, tls.VersionTLS12)
	h := mustWrap(t, s, ss)
	gets := func() int { return rec.Count(storetest.OpGet) }
	open := func() float64 {
		return metricValue(t, reg, "edgeproxy_session_store_breaker_open", "mode", resumption.ModeRedis)
	}

	// An error rate, not a run (#12): after 32 answers (a miss is an
	// answer), 15 failures in a row, under half of the last 32 calls, keep
	// it closed although they are far more than failures.
	for range breakerWindow {
		if _, err := s.UnwrapSession(make([]byte, 32), tls.ConnectionState{}); !errors.Is(err, resumption.ErrMiss) {
			t.Fatal(err)
		}
	}
	f.failing.Store(true)
	for range 15 {
		mustResume(t, s, h)
	}
	if open() != 0 {
		t.Fatal("breaker open with 15 failures among the last 32 calls")
	}
	// The 16th failure is half the window: it opens. The store is skipped,
	// local serves.
	mustResume(t, s, h)
	if open() != 1 {
		t.Fatal("breaker not open with 16 failures among the last 32 calls")
	}
	before := gets()
	mustResume(t, s, h)
	mustWrap(t, s, ss)
	clk.Advance(firstProbe - time.Millisecond)
	mustResume(t, s, h)
	if gets() != before || rec.Count(storetest.OpPut) != 1 {
		t.Fatalf("store called while the breaker is open: %d gets, %d puts", gets()-before, rec.Count(storetest.OpPut)-1)
	}
	if got := metricValue(t, reg, "edgeproxy_session_store_calls_total", "op", "get", "result", "skipped"); got != 2 {
		t.Fatalf("skipped gets = %v; want 2", got)
	}

	// firstProbe after opening one probe goes through; it fails and
	// reopens for twice as long, and so on, doubling up to cooldown.
	clk.Advance(time.Millisecond)
	wait := firstProbe
	for probe := 1; wait < cooldown; probe++ {
		mustResume(t, s, h)
		mustResume(t, s, h)
		if gets() != before+probe || open() != 1 {
			t.Fatalf("probe %d: %d store gets (want %d), open = %v (want 1)", probe, gets()-before, probe, open())
		}
		wait = min(2*wait, cooldown)
		clk.Advance(wait - time.Millisecond)
		mustResume(t, s, h)
		if gets() != before+probe {
			t.Fatalf("probe %d: the store was called %v before the next probe was due", probe, time.Millisecond)
		}
		clk.Advance(time.Millisecond)
	}

	// The next probe succeeds and closes it with a clean window; the store
	// is the truth again, and a dead store opens it after failures calls.
	f.failing.Store(false)
	mustResume(t, s, h)
	if open() != 0 {
		t.Fatal("breaker still open after a successful probe")
	}
	f.failing.Store(true)
	for range failures - 1 {
		mustResume(t, s, h)
	}
	if open() != 0 {
		t.Fatal("breaker open before failures failures")
	}
	mustResume(t, s, h)
	if open() != 1 {
		t.Fatal("breaker not open after failures failures of a closed breaker's first calls")
	}
}

// TestBreakerMergesProbes holds the half-open probe in the store and
// checks that concurrent handshakes do not call the store, nor wait for the
// probe, but resume from the local cache.
func TestBreakerMergesProbes(t *testing.T) {
	t.Parallel()
	s, rec, f, clk, _ := newFaulty(t, Config{Breaker: BreakerConfig{Failures: 1, Cooldown: time.Second}})
	h := mustWrap(t, s, tlstest.Session(t, tls.VersionTLS13))
	f.failing.Store(true)
	mustResume(t, s, h) // opens the breaker
	clk.Advance(time.Second)
	f.failing.Store(false)

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(op storetest.Op) {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	f.hook.Store(&hook)
	probeDone := make(chan error, 1)
	go func() {
		_, err := s.UnwrapSession(h, tls.ConnectionState{})
		probeDone <- err
	}()
	<-entered
	before := len(rec.Calls())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if ss, err := s.UnwrapSession(h, tls.ConnectionState{}); ss == nil || err != nil {
				t.Errorf("UnwrapSession during the probe = %v, %v; want the local copy", ss, err)
			}
		})
	}
	wg.Wait()
	if n := len(rec.Calls()) - before; n != 0 {
		t.Fatalf("%d store calls while the probe was in flight; want 0", n)
	}
	close(release)
	if err := <-probeDone; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if s.breaker.isOpen() {
		t.Fatal("breaker open after a successful probe")
	}
}

func TestSingleUseDegraded(t *testing.T) {
	t.Parallel()
	s, _, f, _, _ := newFaulty(t, Config{SingleUse: true})
	ss := tlstest.Session(t, tls.VersionTLS13)
	h := mustWrap(t, s, ss)
	mustResume(t, s, h)
	if _, err := s.UnwrapSession(h, tls.ConnectionState{}); !errors.Is(err, resumption.ErrMiss) {
		t.Fatalf("second use: %v; want resumption.ErrMiss", err)
	}
	// Store down: single use still holds on this node.
	h = mustWrap(t, s, ss)
	f.failing.Store(true)
	mustResume(t, s, h)
	if _, err := s.UnwrapSession(h, tls.ConnectionState{}); !isStoreErr(err) {
		t.Fatalf("second use, store down: %v; want a store error with no local copy", err)
	}
}

func TestMetricsNil(t *testing.T) {
	t.Parallel()
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	h := mustWrap(t, s, tlstest.Session(t, tls.VersionTLS12))
	mustResume(t, s, h)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsShared(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := mustMetrics(t, reg)
	var nodes []*Backend
	for range 2 {
		s, err := New(Config{Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, s)
	}
	ss := tlstest.Session(t, tls.VersionTLS12)
	mustWrap(t, nodes[0], ss)
	mustWrap(t, nodes[1], ss)
	mustWrap(t, nodes[1], ss)
	if got := metricValue(t, reg, "edgeproxy_session_local_entries", "mode", resumption.ModeSticky); got != 3 {
		t.Fatalf("local entries = %v; want 3 over both backends", got)
	}
	if got := metricValue(t, reg, "edgeproxy_session_store_calls_total", "mode", resumption.ModeSticky, "op", "put", "result", "ok"); got != 3 {
		t.Fatalf("sticky puts = %v; want 3", got)
	}
	nodes[1].Close()
	nodes[1].Close()
	if got := metricValue(t, reg, "edgeproxy_session_local_entries", "mode", resumption.ModeSticky); got != 1 {
		t.Fatalf("local entries after Close = %v; want 1", got)
	}
}

func ExampleConfig_Validate() {
	fmt.Println(Config{Timeout: -time.Second}.Validate())
	fmt.Println(Config{Mode: resumption.ModeRedis}.Validate())
	// Output:
	// resumption.store.timeout: must not be negative, got "-1s"
	// resumption.mode: "redis" needs a shared store, and none is set
}

// ExampleBackend shows sticky mode: sessions live in the node's own cache.
func ExampleBackend() {
	s, err := New(Config{Mode: resumption.ModeSticky, Lifetime: time.Hour})
	if err != nil {
		panic(err)
	}
	layer, err := resumption.New(resumption.Config{Mode: resumption.ModeSticky, Backend: s, Lifetime: time.Hour})
	if err != nil {
		panic(err)
	}
	cfg := &tls.Config{ /* Certificates: ... */ }
	layer.Configure(cfg)

	_, err = s.UnwrapSession(make([]byte, 32), tls.ConnectionState{})
	fmt.Println(errors.Is(err, resumption.ErrMiss))
	fmt.Println(s.Revoke(context.Background(), "not-hex"))
	// Output:
	// true
	// stateful: revoking session "not-hex": not a session ID (32 hex digits)
}

var _ sessioncache.Store = (*hungStore)(nil)

func mustMetrics(tb testing.TB, reg prometheus.Registerer) *Metrics {
	tb.Helper()
	m, err := NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func mustLayerMetrics(tb testing.TB, reg prometheus.Registerer) *resumption.Metrics {
	tb.Helper()
	m, err := resumption.NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// TestMetricsRegisterTwice: a second Metrics on one registry is an error,
// not a panic.
func TestMetricsRegisterTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	mustMetrics(t, reg)
	if m, err := NewMetrics(reg); err == nil || m != nil {
		t.Fatalf("second registration = %v, %v; want an error", m, err)
	}
}
