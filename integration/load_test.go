package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The combined load test of issue #11: a connection flood, a slow-body
// flood and a handshake flood at once against one node, each from its own
// loopback address, while a well-behaved client measures what it gets.

// DefaultLoadSeconds is how long the floods of TestLoadFloods run unless
// EDGEPROXY_LOAD_SECONDS says otherwise (the run is 30 s; CI keeps
// the default short).
const DefaultLoadSeconds = 10

// Flood sizes and sources. 127.0.0.1 is the well-behaved client.
const (
	silentConns     = 500 // raw TCP connections that send nothing
	slowBodyClients = 200 // TLS clients sending a POST body at 1 byte/s
	handshakers     = 3   // goroutines doing full TLS handshakes back to back
	silentFrom      = "127.0.0.2"
	slowBodyFrom    = "127.0.0.3"
	handshakeFrom   = "127.0.0.4"
	goodFrom        = "127.0.0.1"
)

// loadNodeConfig is the node's YAML. The per-IP cap (250) is below
// max_handshakes (256), so the silent flood cannot hold every handshake
// slot, and above the slow-body flood, which is let in whole. The body
// timeout is low so that slow bodies are cut (408) while the load runs.
const loadNodeConfig = `listen: %s
admin: %s
shutdown_timeout: 10s
log: {level: info, format: json, access: false}
routes: [{upstreams: ["http://%s"], limits: {body_timeout: 2s}}]
resumption: {mode: tickets}
limits: {max_connections_per_ip: 250, max_handshakes: 256}
`

func loadDuration(t *testing.T) time.Duration {
	s := os.Getenv("EDGEPROXY_LOAD_SECONDS")
	if s == "" {
		return DefaultLoadSeconds * time.Second
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 600 {
		t.Fatalf("EDGEPROXY_LOAD_SECONDS=%q: want a number of seconds from 1 to 600", s)
	}
	return time.Duration(n) * time.Second
}

func TestLoadFloods(t *testing.T) {
	dur := loadDuration(t)
	c := &cluster{t: t, dir: t.TempDir()}
	t.Cleanup(c.stop)
	c.startUpstream()
	n := &node{name: "node1", cfgPath: filepath.Join(c.dir, "node1.yaml"), logPath: filepath.Join(c.dir, "node1.log")}
	c.nodes = []*node{n}
	var err error
	for attempt := 0; attempt < 3; attempt++ { // the free ports may be taken meanwhile
		n.addr, n.adminAddr = freeAddr(t), freeAddr(t)
		if err = os.WriteFile(n.cfgPath, fmt.Appendf(nil, loadNodeConfig, n.addr, n.adminAddr, c.upAddr), 0o644); err != nil {
			t.Fatal(err)
		}
		if err = c.tryStartNode(n); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting the node: %v", err)
	}
	pid := n.p.cmd.Process.Pid

	good := newGoodClient(n.addr)
	if err := good.get(); err != nil { // its connection is made before the floods
		t.Fatalf("first GET: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	watch := watchNode(ctx, pid, n.adminAddr)
	var floods sync.WaitGroup
	var fl floodStats
	for range slowBodyClients {
		floods.Go(func() { slowBody(ctx, n.addr, &fl) })
	}
	for range silentConns {
		floods.Go(func() { silent(ctx, n.addr, &fl) })
	}
	for range handshakers {
		floods.Go(func() { handshakeLoop(ctx, n.addr, &fl) })
	}
	lat, failed := good.run(ctx)
	<-watch.done

	// Checked before the floods stop: nothing may have marked the upstream
	// down while they ran.
	ms, err := scrape(n.adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	logData, _ := os.ReadFile(n.logPath)
	floods.Wait()

	total := len(lat) + len(failed)
	rate := float64(len(lat)) / float64(max(total, 1))
	slices.Sort(lat)
	t.Logf("well-behaved client: %d requests in %s, %.2f%% answered 200, p50 %s, p99 %s, max %s",
		total, dur, 100*rate, pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1))
	t.Logf("node: peak RSS (VmHWM) %s, open fds peak %d / at the end %d, edgeproxy_connections_open peak %d / at the end %d",
		vmHWM(pid), watch.peakFDs.Load(), watch.lastFDs.Load(), watch.peakOpen.Load(), watch.lastOpen.Load())
	t.Logf("floods: silent connections dialled %d (refused ones included), slow-body connections %d (closed by the node %d, body bytes sent %d), handshakes completed %d, failed %d (first error: %v)",
		fl.silent.Load(), fl.slow.Load(), fl.slowCut.Load(), fl.slowBytes.Load(), fl.handshakes.Load(), fl.handshakeFails.Load(), fl.firstHandshakeErr.Load())
	for _, r := range []string{"max_connections", "max_connections_per_ip", "max_handshakes"} {
		t.Logf("edgeproxy_connections_refused_total{reason=%q} = %.0f", r, ms.sum("edgeproxy_connections_refused_total", "reason", r))
	}
	t.Logf("edgeproxy_client_errors_total{reason=\"body_timeout\"} = %.0f", ms.sum("edgeproxy_client_errors_total", "reason", "body_timeout"))
	if len(failed) > 0 {
		t.Logf("first failures: %v", failed[:min(len(failed), 5)])
	}

	if total < 50 {
		t.Errorf("the well-behaved client made %d requests, too few to measure", total)
	}
	if rate < 0.99 {
		t.Errorf("the well-behaved client got 200 for %.2f%% of its requests, want at least 99%%", 100*rate)
	}
	// The node applied the YAML's per-IP cap: the silent flood (500 from
	// one address) was held to 250.
	if got := ms.sum("edgeproxy_connections_refused_total", "reason", "max_connections_per_ip"); got == 0 {
		t.Errorf("edgeproxy_connections_refused_total{reason=\"max_connections_per_ip\"} = 0: %d silent connections from one address were all let in", silentConns)
	}
	if !ms.has("edgeproxy_upstream_healthy") {
		t.Errorf("no edgeproxy_upstream_healthy series")
	}
	if got := ms.sum("edgeproxy_upstream_healthy"); got != 1 || watch.sawDown.Load() {
		t.Errorf("edgeproxy_upstream_healthy = %v at the end; seen at 0 during the load: %v", got, watch.sawDown.Load())
	}
	if strings.Contains(string(logData), `"upstream down"`) {
		t.Errorf("the node logged \"upstream down\" during the load")
	}
	if n.p.exited() {
		t.Errorf("the node exited: %v", n.p.err)
	}
}

// floodStats counts what the floods did, for the log.
type floodStats struct {
	silent, slow, slowCut, slowBytes, handshakes, handshakeFails atomic.Int64
	firstHandshakeErr                                            atomic.Value // string
}

// pause waits d or until ctx ends. It paces a flood; it synchronises
// nothing.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func dialerFrom(src string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
}

// silent keeps one raw TCP connection open that sends nothing, and makes a
// new one when the node closes it (after a second if it was refused).
func silent(ctx context.Context, addr string, fl *floodStats) {
	d := dialerFrom(silentFrom)
	for ctx.Err() == nil {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			pause(ctx, time.Second)
			continue
		}
		fl.silent.Add(1)
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		start := time.Now()
		io.Copy(io.Discard, conn)
		stop()
		conn.Close()
		if time.Since(start) < time.Second {
			pause(ctx, time.Second)
		}
	}
}

// slowBody sends a POST whose 100 kB body comes at 1 byte/s (under the
// 256 kB that net/http reads after a handler to keep a connection, so an
// upstream that answers early does not end it), on a new
// connection whenever the node closes the last one.
func slowBody(ctx context.Context, addr string, fl *floodStats) {
	d := &tls.Dialer{NetDialer: dialerFrom(slowBodyFrom), Config: &tls.Config{RootCAs: certPool, ServerName: "localhost", NextProtos: []string{"http/1.1"}}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			pause(ctx, time.Second)
			continue
		}
		fl.slow.Add(1)
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
		for err == nil {
			select {
			case <-ctx.Done():
				err = ctx.Err()
				continue
			case <-tick.C:
			}
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err = conn.Write([]byte("a")); err == nil {
				fl.slowBytes.Add(1)
			}
		}
		if ctx.Err() == nil {
			fl.slowCut.Add(1)
		}
		stop()
		conn.Close()
	}
}

// handshakeLoop makes full TLS handshakes back to back (no session cache),
// closing each connection at once.
func handshakeLoop(ctx context.Context, addr string, fl *floodStats) {
	d := &tls.Dialer{NetDialer: dialerFrom(handshakeFrom), Config: &tls.Config{RootCAs: certPool, ServerName: "localhost"}}
	for ctx.Err() == nil {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil {
				fl.handshakeFails.Add(1)
				fl.firstHandshakeErr.CompareAndSwap(nil, err.Error())
			}
			continue
		}
		fl.handshakes.Add(1)
		conn.Close()
	}
}

// goodClient is the well-behaved client: keep-alive GETs, one at a time.
type goodClient struct {
	client *http.Client
	url    string
}

func newGoodClient(addr string) *goodClient {
	tr := &http.Transport{
		DialContext:     dialerFrom(goodFrom).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: certPool, ServerName: "localhost"},
	}
	return &goodClient{client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, url: "https://" + addr + "/"}
}

func (g *goodClient) get() error {
	resp, err := g.client.Get(g.url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// run GETs every 20 ms until ctx ends; it returns the latencies of the
// requests answered 200 and the errors of the others.
func (g *goodClient) run(ctx context.Context) (lat []time.Duration, failed []error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return lat, failed
		case <-tick.C:
		}
		start := time.Now()
		if err := g.get(); err != nil {
			failed = append(failed, err)
			continue
		}
		lat = append(lat, time.Since(start))
	}
}

// pct returns the p quantile of sorted latencies.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// nodeWatch samples a node while the load runs: its open file descriptors,
// its open connections gauge, and whether the upstream was ever unhealthy.
type nodeWatch struct {
	peakFDs, peakOpen atomic.Int64
	lastFDs, lastOpen atomic.Int64 // the last sample
	sawDown           atomic.Bool
	done              chan struct{}
}

func watchNode(ctx context.Context, pid int, adminAddr string) *nodeWatch {
	w := &nodeWatch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			ms, serr := scrape(adminAddr)
			if ctx.Err() != nil {
				return // the floods are closing: not a sample of the load
			}
			if err == nil {
				w.lastFDs.Store(int64(len(fds)))
				w.peakFDs.Store(max(w.peakFDs.Load(), int64(len(fds))))
			}
			if serr == nil {
				if ms.has("edgeproxy_upstream_healthy") && ms.sum("edgeproxy_upstream_healthy") != 1 {
					w.sawDown.Store(true)
				}
				open := int64(ms.sum("edgeproxy_connections_open"))
				w.lastOpen.Store(open)
				w.peakOpen.Store(max(w.peakOpen.Load(), open))
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// vmHWM returns the peak resident set size of process pid, as the kernel
// reports it.
func vmHWM(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown"
}
