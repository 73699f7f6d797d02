package stateful

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

// These tests (#12) run the nodes' default store timeout and breaker
// against a machine that is busy and a store that freezes and dies: the
// breaker must tell a slow scheduler from a dead store, and use the store
// again soon after it is back. Nodes serve real listeners, clients run
// concurrently, as under a load balancer.

// serve runs n behind a loopback listener until the test ends: each
// connection gets the handshake and one byte, as tlstest.Loopback.Connect
// does. It returns the address.
func serve(tb testing.TB, n *node) string {
	tb.Helper()
	ln := testserver.ServeTCP(tb, nil, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		s := tls.Server(c, n.tls)
		if s.Handshake() == nil {
			s.Write([]byte{1})
		}
	})
	return ln.Addr().String()
}

// dial makes one connection to addr, reads the server's byte (and with it
// a TLS 1.3 ticket), and reports whether it resumed.
func dial(addr string, cfg *tls.Config) (resumed bool, err error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return false, err
	}
	return c.ConnectionState().DidResume, nil
}

// tally counts what the clients of a run saw.
type tally struct {
	conns, returning, resumed, failed atomic.Int64
	firstErr                          atomic.Pointer[error]
	// watchFrom, if not zero, asks for the first connection started after
	// it (UnixNano) that resumes: when it ended goes to firstResumed.
	watchFrom, firstResumed atomic.Int64
}

// watch starts timing the first resumption from now on, and returns how
// long the previous watch took ("none" if nothing resumed).
func (t *tally) watch(from time.Time) string {
	w, f := t.watchFrom.Load(), t.firstResumed.Swap(0)
	t.watchFrom.Store(from.UnixNano())
	if w == 0 {
		return ""
	}
	if f == 0 {
		return "none"
	}
	return time.Duration(f - w).Round(time.Millisecond).String()
}

// client connects round robin over addrs, starting at addrs[first], until
// n connections are made or stop is closed. Every connection after its
// first offers the session of the previous one, on another node.
func (t *tally) client(cfg *tls.Config, addrs []string, first, n int, stop <-chan struct{}) {
	for i := 0; n <= 0 || i < n; i++ {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now().UnixNano()
		resumed, err := dial(addrs[(first+i)%len(addrs)], cfg)
		t.conns.Add(1)
		switch {
		case err != nil:
			t.failed.Add(1)
			t.firstErr.CompareAndSwap(nil, &err)
		case i > 0:
			t.returning.Add(1)
			if resumed {
				t.resumed.Add(1)
				if w := t.watchFrom.Load(); w != 0 && start > w {
					t.firstResumed.CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		}
	}
}

func (t *tally) String() string {
	return fmt.Sprintf("%d connections, %d failed, %d of %d returning clients resumed (%.1f%%)",
		t.conns.Load(), t.failed.Load(), t.resumed.Load(), t.returning.Load(), 100*float64(t.resumed.Load())/float64(max(t.returning.Load(), 1)))
}

// checkNoneFailed fails the test if a handshake failed.
func (t *tally) checkNoneFailed(tb testing.TB) {
	tb.Helper()
	if n := t.failed.Load(); n != 0 {
		tb.Fatalf("%d connections failed; want 0; first: %v", n, *t.firstErr.Load())
	}
}

// burnCPU starts n processes that spin on a CPU each until the test ends
// (and at most 5 minutes).
func burnCPU(tb testing.TB, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	for range n {
		cmd := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// TestCrossNodeUnderCPUBurn runs clients across three nodes with the
// default store timeout while two processes keep both CPUs busy: the
// scheduler's delay must not pass for a store failure, so at least 99% of
// returning clients resume on another node than their last one, and none
// fails.
func TestCrossNodeUnderCPUBurn(t *testing.T) {
	// Not parallel: it loads the machine on purpose.
	const clients, reconnects = 16, 40
	burnCPU(t, 2)
	for _, kind := range storeKinds {
		_, store := kind.start(t)
		for _, v := range tlstest.Versions {
			t.Run(kind.name+"/"+v.Name, func(t *testing.T) {
				var addrs []string
				nodes := newFleet(t, 3, Config{Mode: kind.mode, Store: store, Prefix: v.Name + "/"}, v.Version)
				for _, n := range nodes {
					addrs = append(addrs, serve(t, n))
				}
				defer func() {
					var calls [4]float64
					for _, n := range nodes {
						for i, r := range []string{"timeout", "error", "skipped"} {
							calls[i] += n.metric(t, "edgeproxy_session_store_calls_total", "result", r)
						}
						calls[3] += n.metric(t, "edgeproxy_session_store_breaker_open")
					}
					t.Logf("store calls: %v timed out, %v failed, %v skipped; %v breakers open", calls[0], calls[1], calls[2], calls[3])
				}()
				var tl tally
				var wg sync.WaitGroup
				for c := range clients {
					cfg := newClient(t, v.Version)
					wg.Go(func() { tl.client(cfg, addrs, c, reconnects+1, nil) })
				}
				wg.Wait()
				t.Log(tl.String())
				tl.checkNoneFailed(t)
				if r, n := tl.resumed.Load(), tl.returning.Load(); r*100 < n*99 {
					t.Fatalf("%d of %d returning clients resumed across nodes under CPU load; want at least 99%%", r, n)
				}
			})
		}
	}
}

// TestRecoveryWithinASecond kills the store long enough for a node's
// breaker to reach its longest probe wait, restarts it right after a failed
// probe, and checks on the injected clock that one second later the node
// resumes a session another node issued.
func TestRecoveryWithinASecond(t *testing.T) {
	// Not parallel: it stops and restarts a server on its port.
	c := connector{tb: t, l: tlstest.NewLoopback(t)}
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			c.tb = t
			var srv *testserver.Server
			var store sessioncache.Store
			if kind.mode != resumption.ModeRedis {
				srv, store = kind.start(t)
			} else {
				// go-redis has a dial breaker of its own: after PoolSize
				// failed dials (10 per CPU by default) its pool fails every
				// call until a background dial, retried every second of
				// real time, succeeds. Keep this test to edgeproxy's breaker,
				// on the injected clock; TestFaultLoop runs the defaults.
				srv = testserver.Redis(t)
				rs, err := redisstore.New(redisstore.Config{Addrs: []string{srv.Addr}, PoolSize: 100, Timeout: Config{}.StoreCallBound()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { rs.Close() })
				store = rs
			}
			clk := storetest.NewClock(time.Now())
			nodes := newFleet(t, 2, Config{Mode: kind.mode, Store: store, Now: clk.Now, Timeout: loadedCITimeout}, tls.VersionTLS13)
			a, b := nodes[0], nodes[1]
			srv.Stop()
			// 15s of outage with traffic on B: its breaker opens, and its
			// probes fail with a growing wait, up to the longest.
			cli := newClient(t, tls.VersionTLS13)
			c.expect("store down, first", cli, b, false)
			for range 15 {
				clk.Advance(time.Second)
				c.expect("store down, same node", cli, b, true)
			}
			if got := b.metric(t, "edgeproxy_session_store_breaker_open"); got != 1 {
				t.Fatalf("breaker_open = %v; want 1", got)
			}
			// Move on until B has just probed: the longest wait lies ahead.
			failedGets := func() float64 {
				return b.metric(t, "edgeproxy_session_store_calls_total", "op", "get", "result", "error")
			}
			before := failedGets()
			for i := 0; failedGets() == before; i++ {
				if i == 100 {
					t.Fatal("no probe in 10s of injected time")
				}
				clk.Advance(100 * time.Millisecond)
				c.expect("store down, same node", cli, b, true)
			}
			srv.Restart()
			clk.Advance(time.Second)
			fresh := newClient(t, tls.VersionTLS13)
			c.expect("store back, first", fresh, a, false)
			c.expect("store back 1s ago, cross-node", fresh, b, true)
			if got := b.metric(t, "edgeproxy_session_store_breaker_open"); got != 0 {
				t.Fatalf("breaker_open = %v 1s after the store came back; want 0", got)
			}
		})
	}
}

// TestFaultLoop runs three redis-mode nodes under load while Redis is
// frozen for 2s (SIGSTOP), then killed and restarted, every 13s.
// EDGEPROXY_FAULT_LOOP_SECONDS sets the length (default 15; the issue's
// figure is for 60). No handshake may fail, and at least 60% of returning
// clients must resume, over the whole loop.
func TestFaultLoop(t *testing.T) {
	// Not parallel: it freezes, stops and restarts a server on its port.
	seconds := 15
	if s := os.Getenv("EDGEPROXY_FAULT_LOOP_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("EDGEPROXY_FAULT_LOOP_SECONDS=%q: want a positive integer", s)
		}
		seconds = n
	}
	const clients, period, frozen = 6, 13 * time.Second, 2 * time.Second
	srv, store := startRedis(t)
	var addrs []string
	// Version 0: the nodes speak TLS 1.2 and 1.3; the clients one each.
	for _, n := range newFleet(t, 3, Config{Mode: resumption.ModeRedis, Store: store}, 0) {
		addrs = append(addrs, serve(t, n))
	}
	var tl tally
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range clients {
		cfg := newClient(t, tlstest.Versions[c%len(tlstest.Versions)].Version)
		wg.Go(func() { tl.client(cfg, addrs, c, 0, stop) })
	}
	end := make(chan struct{})
	time.AfterFunc(time.Duration(seconds)*time.Second, func() { close(end) })
	tick := time.NewTicker(period)
	defer tick.Stop()
	cycles := 0
	var recovered []string // per restart: how long until the first resumption
	fault := func() {
		cycles++
		srv.Pause()
		select {
		case <-time.After(frozen): // the fault's length, not a synchronisation
		case <-end:
			srv.Resume()
			return
		}
		srv.Resume()
		srv.Stop()
		srv.Restart()
		if d := tl.watch(time.Now()); d != "" {
			recovered = append(recovered, d)
		}
	}
	fault()
loop:
	for {
		select {
		case <-tick.C:
			fault()
		case <-end:
			break loop
		}
	}
	close(stop)
	wg.Wait()
	recovered = append(recovered, tl.watch(time.Now()))
	// Clients move round robin, so the first resumption after a restart is
	// a cross-node one, served by the store.
	t.Logf("%ds, %d fault cycles: %s; first resumption after each restart: %v", seconds, cycles, tl.String(), recovered)
	tl.checkNoneFailed(t)
	if r, n := tl.resumed.Load(), tl.returning.Load(); r*100 < n*60 {
		t.Fatalf("%d of %d returning clients resumed over the fault loop; want at least 60%%", r, n)
	}
}
