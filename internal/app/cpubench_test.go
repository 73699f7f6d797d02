package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/bench"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// BenchmarkServerCPU reports, in one run, the server CPU per connection of
// handshake-only connections (#12) for every cell of
// {tickets, redis, memcached} × {TLS 1.2, TLS 1.3} × {full, first, resumed}
// (full: a client that offers no resumption, so no session is issued;
// first: a new client that accepts a session, which the node issues and
// commits, a browser's first visit; resumed: a returning client):
// the node's CPU (this process: getrusage) and the store's (redis-server or
// memcached: utime+stime from /proc/PID/stat), then the two goal ratios of
// issue #12. Run it alone, once:
//
//	go test -run '^$' -bench ServerCPU -benchtime 1x ./internal/app/
//
// The load comes from internal/bench (what `edgeproxy bench` runs) in a
// child process (this test binary, re-executed: see TestMain), so the
// client's CPU is not counted; it offers X25519 only (GODEBUG=tlsmlkem=0),
// as in the table. The three nodes are real in-process Apps on
// loopback, with real redis-server and memcached (internal/testserver),
// default store settings. Cells run in alternated order over the passes, so
// that a noisy neighbour spreads over all of them. Environment:
//
//	EDGEPROXY_CPUBENCH_SECONDS      seconds per cell and pass (default 2)
//	EDGEPROXY_CPUBENCH_PASSES       passes (default 2)
//	EDGEPROXY_CPUBENCH_CONCURRENCY  client workers (default 8)
//	EDGEPROXY_CPUBENCH_CELLS        only cells whose name contains one of
//	                                these comma-separated strings
//	                                (e.g. "redis/1.3/resumed"), for profiling
//	                                with -cpuprofile / -memprofile: the
//	                                profile is the server's alone.
//
// The node's figure also holds what runs beside the handshakes in this
// process (the two idle nodes, the runtime, the child's warm-up
// connections: one per worker and cell), a fraction of a percent.
func BenchmarkServerCPU(b *testing.B) {
	seconds := envInt(b, "EDGEPROXY_CPUBENCH_SECONDS", 2)
	passes := envInt(b, "EDGEPROXY_CPUBENCH_PASSES", 2)
	conc := envInt(b, "EDGEPROXY_CPUBENCH_CONCURRENCY", 8)
	var only []string
	if s := os.Getenv("EDGEPROXY_CPUBENCH_CELLS"); s != "" {
		only = strings.Split(s, ",")
	}

	up := httptest.NewServer(demoapp.Handler("up"))
	b.Cleanup(up.Close)
	rs, ms := testserver.Redis(b), testserver.Memcached(b)
	off := ""
	modes := []struct {
		name  string
		res   config.Resumption
		store *testserver.Server
	}{
		{"tickets", config.Resumption{Mode: "tickets"}, nil},
		{"redis", config.Resumption{Mode: "redis"}, rs},
		{"memcached", config.Resumption{Mode: "memcached"}, ms},
	}
	modes[1].res.Redis.Addrs = []string{rs.Addr}
	modes[2].res.Memcached.Servers = []string{ms.Addr}
	var cells []*cpuCell
	for _, m := range modes {
		a := startNode(b, config.Config{Admin: &off, Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: m.res})
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			for _, kind := range []string{bench.ModeFull, bench.ModeFirst, bench.ModeResume} {
				c := &cpuCell{mode: m.name, version: v, kind: kind, addr: a.Addr().String(), node: a, store: m.store}
				if len(only) == 0 || slices.ContainsFunc(only, func(s string) bool { return strings.Contains(c.name(), s) }) {
					cells = append(cells, c)
				}
			}
		}
	}
	if len(cells) == 0 {
		b.Fatalf("EDGEPROXY_CPUBENCH_CELLS=%q selects no cell", os.Getenv("EDGEPROXY_CPUBENCH_CELLS"))
	}
	for p := range passes {
		order := slices.Clone(cells)
		if p%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range order {
			c.measure(b, time.Duration(seconds)*time.Second, conc)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nserver CPU per handshake-only connection, %d passes × %ds, concurrency %d\n", passes, seconds, conc)
	fmt.Fprintf(&out, "%-26s %9s %8s %10s %10s %10s %7s %13s\n", "cell", "hs/s", "resumed", "node µs", "store µs", "total µs", "errors", "store failed")
	for _, c := range cells {
		fmt.Fprintf(&out, "%-26s %9.0f %7.1f%% %10.1f %10.1f %10.1f %7d %13.0f\n", c.name(), c.hps(), 100*c.resumedRatio(), c.perConn(c.nodeCPU), c.perConn(c.storeCPU), c.total(), c.errors, c.storeFailed)
		b.ReportMetric(c.total(), c.name()+"-µs/conn")
	}
	find := func(mode string, v uint16, kind string) *cpuCell {
		for _, c := range cells {
			if c.mode == mode && c.version == v && c.kind == kind {
				return c
			}
		}
		return nil
	}
	fmt.Fprintf(&out, "goal ratios (#12):\n")
	for _, mode := range []string{"redis", "memcached"} {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			if st, tk := find(mode, v, bench.ModeResume), find("tickets", v, bench.ModeResume); st != nil && tk != nil {
				fmt.Fprintf(&out, "  %s TLS %s resumed CPU / tickets resumed CPU = %.2f (goal <= 1.3)\n", mode, proxy.VersionName(v), st.total()/tk.total())
			}
		}
		// What a resumption saves is the full handshake the same client
		// would make instead, session issue and commit included (first);
		// full, which issues nothing, is shown beside it.
		if r, f := find(mode, tls.VersionTLS13, bench.ModeResume), find(mode, tls.VersionTLS13, bench.ModeFirst); r != nil && f != nil {
			fmt.Fprintf(&out, "  %s TLS 1.3 resumed hs/s / first-visit hs/s = %.2f (goal >= 1.1)%s\n", mode, r.hps()/f.hps(), passSpread(r, f))
		}
		if r, f := find(mode, tls.VersionTLS13, bench.ModeResume), find(mode, tls.VersionTLS13, bench.ModeFull); r != nil && f != nil {
			fmt.Fprintf(&out, "  %s TLS 1.3 resumed hs/s / full (no session issued) hs/s = %.2f%s\n", mode, r.hps()/f.hps(), passSpread(r, f))
		}
	}
	b.Log(out.String())
	fmt.Fprint(os.Stderr, out.String())
}

// cpuCell accumulates one cell's measurements over the passes.
type cpuCell struct {
	mode    string
	version uint16
	kind    string
	addr    string
	node    *App
	store   *testserver.Server // nil: tickets

	conns, resumed, errors int64
	passHPS                []float64 // hs/s of each pass
	storeFailed            float64   // store calls that timed out, failed or were skipped
	elapsed                time.Duration
	nodeCPU, storeCPU      time.Duration
}

func (c *cpuCell) name() string {
	kind := c.kind
	if c.kind == bench.ModeResume {
		kind = "resumed"
	}
	return c.mode + "/" + proxy.VersionName(c.version) + "/" + kind
}

func (c *cpuCell) hps() float64 {
	if c.elapsed <= 0 {
		return 0
	}
	return float64(c.conns) / c.elapsed.Seconds()
}

func (c *cpuCell) resumedRatio() float64 {
	if c.conns == 0 {
		return 0
	}
	return float64(c.resumed) / float64(c.conns)
}

// perConn returns d per successful connection, in µs.
func (c *cpuCell) perConn(d time.Duration) float64 {
	if c.conns == 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(c.conns)
}

func (c *cpuCell) total() float64 { return c.perConn(c.nodeCPU + c.storeCPU) }

// measure runs the client process against the cell's node for d and adds
// what it measured.
func (c *cpuCell) measure(b *testing.B, d time.Duration, conc int) {
	b.Helper()
	job, err := json.Marshal(cpuJob{Target: c.addr, Mode: c.kind, Version: c.version, Concurrency: conc, Duration: d})
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), cpuJobEnv+"="+string(job), "GODEBUG=tlsmlkem=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	failed0 := storeFailures(b, c.node)
	node0, store0 := selfCPU(), procCPU(c.store)
	err = cmd.Run()
	node1, store1 := selfCPU(), procCPU(c.store)
	c.storeFailed += storeFailures(b, c.node) - failed0
	if err != nil {
		b.Fatalf("%s: client: %v\n%s", c.name(), err, stderr.String())
	}
	var r cpuJobResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		b.Fatalf("%s: client output %q: %v", c.name(), stdout.String(), err)
	}
	c.conns += r.Full + r.Resumed
	c.passHPS = append(c.passHPS, float64(r.Full+r.Resumed)/r.Elapsed.Seconds())
	c.resumed += r.Resumed
	c.errors += r.Errors
	c.elapsed += r.Elapsed
	c.nodeCPU += node1 - node0
	c.storeCPU += store1 - store0
}

// passSpread returns, for two cells measured side by side in each pass,
// the lowest, median and highest ratio of r's hs/s to f's over the passes:
// on a shared machine a neighbour's burst moves the ratio of one pass, and
// the spread shows how far (#12). It returns "" with fewer than 3 passes.
func passSpread(r, f *cpuCell) string {
	if len(r.passHPS) < 3 || len(r.passHPS) != len(f.passHPS) {
		return ""
	}
	ratios := make([]float64, len(r.passHPS))
	for i := range ratios {
		ratios[i] = r.passHPS[i] / f.passHPS[i]
	}
	slices.Sort(ratios)
	return fmt.Sprintf("; per pass min %.2f median %.2f max %.2f", ratios[0], ratios[len(ratios)/2], ratios[len(ratios)-1])
}

// cpuJobEnv carries a cpuJob to the re-executed test binary.
const cpuJobEnv = "EDGEPROXY_CPUBENCH_CLIENT"

type cpuJob struct {
	Target      string
	Mode        string
	Version     uint16
	Concurrency int
	Duration    time.Duration
}

type cpuJobResult struct {
	Full, Resumed, Errors int64
	Elapsed               time.Duration
}

// TestMain runs the client of BenchmarkServerCPU when the binary is
// re-executed for it, and the tests otherwise.
func TestMain(m *testing.M) {
	if job := os.Getenv(cpuJobEnv); job != "" {
		os.Exit(runCPUJob(job))
	}
	os.Exit(m.Run())
}

func runCPUJob(job string) int {
	var j cpuJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := bench.Run(context.Background(), bench.Config{
		Targets: []string{j.Target}, Mode: j.Mode, TLSVersion: j.Version,
		Concurrency: j.Concurrency, Duration: j.Duration, Insecure: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, _ := json.Marshal(cpuJobResult{Full: r.Full, Resumed: r.Resumed, Errors: r.Errors, Elapsed: r.Elapsed})
	os.Stdout.Write(out)
	return 0
}

// storeFailures returns how many of a's shared store calls timed out,
// failed or were skipped by the breaker so far (a read-through, result
// "local", is none of these): a cell with many measured
// the degraded path, not the store.
func storeFailures(b *testing.B, a *App) float64 {
	b.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "edgeproxy_session_store_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() != "ok" && l.GetValue() != "miss" && l.GetValue() != "local" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// selfCPU returns the user plus system CPU time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the CPU time s's process used so far, or 0 for a nil s
// (tickets: no store).
func procCPU(s *testserver.Server) time.Duration {
	if s == nil {
		return 0
	}
	return s.CPU()
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}
