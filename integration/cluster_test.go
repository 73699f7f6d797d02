package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nodeCount is the number of edgeproxy nodes behind HAProxy.
const nodeCount = 3

// node is one edgeproxy process. It keeps its ports across restarts.
type node struct {
	name      string // node1, node2, ...: also its HAProxy server name
	addr      string // the TLS listener
	adminAddr string // /metrics, /healthz, /readyz
	cfgPath   string
	logPath   string
	p         *proc
}

// cluster is a mode's fleet: a shared upstream app, nodeCount nodes with
// the same resumption configuration, the services the mode needs, and
// HAProxy in front. Everything is stopped when the test ends.
type cluster struct {
	t        *testing.T
	mode     mode
	dir      string
	env      *modeEnv
	upstream *proc
	upAddr   string
	nodes    []*node
	lb       *haproxy
}

// newCluster starts a fleet for m and waits until HAProxy sees every node
// healthy.
func newCluster(t *testing.T, m mode) *cluster {
	t.Helper()
	return newClusterWith(t, m, clusterOptions{})
}

// clusterOptions vary a cluster from the suite's default.
type clusterOptions struct {
	// accessLog turns the nodes' access log on (into their log files).
	accessLog bool
	// nodeYAML is appended to every node's YAML.
	nodeYAML string
	// serverOptions is appended to every HAProxy server line, e.g.
	// "send-proxy-v2".
	serverOptions string
}

// newClusterWith is newCluster with opts.
func newClusterWith(t *testing.T, m mode, opts clusterOptions) *cluster {
	t.Helper()
	need(t, "haproxy")
	need(t, "openssl")
	c := &cluster{t: t, mode: m, dir: t.TempDir()}
	t.Cleanup(c.stop)
	c.env = setupMode(t, m, c.dir)
	resumption := m.resumption(c.env)
	c.startUpstream()
	for i := range nodeCount {
		n := &node{
			name:    fmt.Sprintf("node%d", i+1),
			cfgPath: filepath.Join(c.dir, fmt.Sprintf("node%d.yaml", i+1)),
			logPath: filepath.Join(c.dir, fmt.Sprintf("node%d.log", i+1)),
		}
		c.nodes = append(c.nodes, n)
		var err error
		for attempt := 0; attempt < 3; attempt++ { // the free ports may be taken meanwhile
			n.addr, n.adminAddr = freeAddr(t), freeAddr(t)
			cfg := fmt.Sprintf(nodeConfig, n.addr, n.adminAddr, opts.accessLog, c.upAddr, resumption) + opts.nodeYAML + "\n"
			if err = os.WriteFile(n.cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			if err = c.tryStartNode(n); err == nil || !strings.Contains(err.Error(), "address already in use") {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
	}
	c.lb = startHAProxy(t, c.dir, m.balance, c.nodes, opts.serverOptions)
	return c
}

// nodeConfig is a node's YAML; the certificate comes from --cert/--key.
const nodeConfig = `listen: %s
admin: %s
shutdown_timeout: 10s
log: {level: info, format: json, access: %t}
routes: [{upstreams: ["http://%s"]}]
resumption: %s
`

// stop kills every process (whatever happened) and, if the test failed,
// prints the tail of every log.
func (c *cluster) stop() {
	if c.lb != nil {
		c.lb.p.kill()
	}
	for _, n := range c.nodes {
		n.p.kill()
	}
	c.upstream.kill()
	for _, path := range c.logs() {
		data, _ := os.ReadFile(path)
		if i := strings.Index(string(data), "WARNING: DATA RACE"); i >= 0 {
			report := strings.SplitN(string(data[i:]), "\n", 80)
			c.t.Errorf("%s reported a data race:\n%s", filepath.Base(path), strings.Join(report[:len(report)-1], "\n"))
		}
	}
	if !c.t.Failed() {
		return
	}
	for _, n := range c.nodes {
		c.t.Logf("---- %s log (%s), last lines:\n%s", n.name, n.logPath, tail(n.logPath, 25))
	}
	if c.lb != nil {
		c.t.Logf("---- haproxy log, last lines:\n%s", tail(c.lb.logPath, 15))
	}
}

// logs returns the log files of the upstream app and the nodes.
func (c *cluster) logs() []string {
	paths := []string{filepath.Join(c.dir, "upstream.log")}
	for _, n := range c.nodes {
		paths = append(paths, n.logPath)
	}
	return paths
}

func (c *cluster) startUpstream() {
	t := c.t
	t.Helper()
	logPath := filepath.Join(c.dir, "upstream.log")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c.upAddr = freeAddr(t)
		p, err := startProc("upstream", logPath, binPath, "upstream", "--listen", c.upAddr, "--name", "app")
		if err != nil {
			t.Fatal(err)
		}
		c.upstream = p
		lastErr = poll(15*time.Second, func() (bool, string) {
			if p.exited() {
				return true, ""
			}
			resp, err := adminClient.Get("http://" + c.upAddr + "/healthz")
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
		if lastErr == nil && !p.exited() {
			return
		}
		if p.exited() {
			lastErr = fmt.Errorf("exited: %v\n%s", p.err, tail(logPath, 10))
		}
		p.kill()
	}
	t.Fatalf("starting the upstream app: %v", lastErr)
}

// tryStartNode starts n's process and waits until its /readyz answers 200.
func (c *cluster) tryStartNode(n *node) error {
	p, err := startProc(n.name, n.logPath, binPath, "serve", "--config", n.cfgPath, "--cert", certFile, "--key", keyFile)
	if err != nil {
		return err
	}
	n.p = p
	err = poll(20*time.Second, func() (bool, string) {
		if p.exited() {
			return true, ""
		}
		resp, err := adminClient.Get("http://" + n.adminAddr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	if err == nil && p.exited() {
		err = fmt.Errorf("exited before it was ready: %v\n%s", p.err, tail(n.logPath, 20))
	}
	if err != nil {
		p.kill()
	}
	return err
}

// startNode starts n again on its ports and waits until it is ready.
func (c *cluster) startNode(t *testing.T, n *node) {
	t.Helper()
	if err := c.tryStartNode(n); err != nil {
		t.Fatalf("restarting %s: %v", n.name, err)
	}
}

// stopNode stops n gracefully (SIGTERM) and requires a clean exit.
func (c *cluster) stopNode(t *testing.T, n *node) {
	t.Helper()
	if err := n.p.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	if err := n.p.wait(20 * time.Second); err != nil {
		t.Fatalf("%s after SIGTERM: %v (want a clean exit after draining)", n.name, err)
	}
}

// killNode kills n (SIGKILL: a crash, no draining).
func (c *cluster) killNode(t *testing.T, n *node) {
	t.Helper()
	n.p.kill()
}

// metrics scrapes n's /metrics.
func (c *cluster) metrics(t *testing.T, n *node) metrics {
	t.Helper()
	ms, err := scrape(n.adminAddr)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	return ms
}

// handshakes returns, per node, the handshakes of version (label value
// "1.2" or "1.3") with resumed "true" or "false".
func (c *cluster) handshakes(t *testing.T, version uint16, resumed string) []float64 {
	t.Helper()
	out := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = c.metrics(t, n).sum("edgeproxy_tls_handshakes_total", "version", versionLabel(version), "resumed", resumed)
	}
	return out
}

// waitKeyUpdate waits until every node's ticket key source (the source
// label: file, redis) has counted more updates with result (success or
// failure) than in before and, if ringSize is not zero, holds a ring of
// that many keys. It returns the new counts.
func (c *cluster) waitKeyUpdate(t *testing.T, source, result string, before []float64, ringSize int) []float64 {
	t.Helper()
	after := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		waitUntil(t, 20*time.Second, fmt.Sprintf("%s: a %s ticket key update (%s)", n.name, result, source), func() (bool, string) {
			ms, err := scrape(n.adminAddr)
			if err != nil {
				return false, err.Error()
			}
			after[i] = ms.sum("edgeproxy_ticketkeys_rotations_total", "source", source, "result", result)
			size := ms.sum("edgeproxy_ticketkeys_ring_size", "source", source)
			return after[i] > before[i] && (ringSize == 0 || size == float64(ringSize)),
				fmt.Sprintf("rotations_total{result=%q} = %v, was %v; ring size %v", result, after[i], before[i], size)
		})
	}
	return after
}

// keyUpdates returns every node's count of ticket key updates.
func (c *cluster) keyUpdates(t *testing.T, source, result string) []float64 {
	t.Helper()
	out := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = c.metrics(t, n).sum("edgeproxy_ticketkeys_rotations_total", "source", source, "result", result)
	}
	return out
}

// gauge returns one series' value on every node.
func (c *cluster) gauge(t *testing.T, name string, kv ...string) []float64 {
	t.Helper()
	out := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		ms := c.metrics(t, n)
		if !ms.has(name, kv...) {
			t.Fatalf("%s: no series %s%v", n.name, name, kv)
		}
		out[i] = ms.sum(name, kv...)
	}
	return out
}

// restartNode restarts n the way an operator rolls a fleet: out of HAProxy,
// drained, SIGTERM, started again on the same ports, ready, back in.
func (c *cluster) restartNode(t *testing.T, n *node) {
	t.Helper()
	c.lb.drain(t, n.name)
	c.stopNode(t, n)
	c.startNode(t, n)
	c.lb.undrain(t, n.name)
}
