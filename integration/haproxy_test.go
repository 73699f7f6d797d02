package integration

import (
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// haproxy is a real HAProxy in TCP mode in front of the nodes: it passes
// TLS through untouched, balances each new connection (round robin, or by
// source address for sticky), and health-checks every node's admin /readyz.
type haproxy struct {
	addr      string // the frontend: where clients connect
	statsAddr string // the admin stats socket (TCP, level admin)
	cfgPath   string
	logPath   string
	p         *proc
}

// backendName is the HAProxy backend holding the nodes, whose servers are
// named like the nodes.
const backendName = "be"

const haproxyConfig = `global
    maxconn 512
    nbthread 1
    stats socket ipv4@%[1]s level admin
    stats timeout 10s

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 2s
    # A connection refused by a dead node that is not yet marked down is
    # retried on another node: clients never see it.
    retries 3
    option redispatch 1

frontend fe
    bind %[2]s
    default_backend ` + backendName + `

backend ` + backendName + `
    balance %[3]s
%[4]s    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
%[5]s`

// startHAProxy writes haproxy.cfg into dir for nodes, runs haproxy in the
// foreground, and waits until every node is UP after a passed health check.
// serverOptions is appended to every server line. It is stopped when the
// test ends.
func startHAProxy(t *testing.T, dir, balance string, nodes []*node, serverOptions string) *haproxy {
	t.Helper()
	bin := need(t, "haproxy")
	var servers strings.Builder
	for _, n := range nodes {
		_, adminPort, _ := net.SplitHostPort(n.adminAddr)
		fmt.Fprintf(&servers, "    server %s %s check port %s %s\n", n.name, n.addr, adminPort, serverOptions)
	}
	hash := ""
	if balance == "source" {
		// Only the clients of a dead node move to another one.
		hash = "    hash-type consistent\n"
	}
	h := &haproxy{cfgPath: filepath.Join(dir, "haproxy.cfg"), logPath: filepath.Join(dir, "haproxy.log")}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // the free ports may be taken meanwhile
		h.addr, h.statsAddr = freeAddr(t), freeAddr(t)
		cfg := fmt.Sprintf(haproxyConfig, h.statsAddr, h.addr, balance, hash, servers.String())
		if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := startProc("haproxy", h.logPath, bin, "-f", h.cfgPath, "-db")
		if err != nil {
			t.Fatal(err)
		}
		h.p = p
		t.Cleanup(p.kill)
		lastErr = poll(20*time.Second, func() (bool, string) {
			if p.exited() {
				return true, ""
			}
			st, err := h.servers()
			if err != nil {
				return false, err.Error()
			}
			for _, n := range nodes {
				if s := st[n.name]; s.status != "UP" || s.check != "L7OK" {
					return false, fmt.Sprintf("%s is %q, last check %q", n.name, s.status, s.check)
				}
			}
			return true, ""
		})
		if lastErr == nil && !p.exited() {
			return h
		}
		if p.exited() {
			lastErr = fmt.Errorf("haproxy exited: %v\n%s", p.err, tail(h.logPath, 20))
		}
		p.kill()
	}
	t.Fatalf("starting haproxy: %v", lastErr)
	return nil
}

// command sends one command to the stats socket and returns the answer.
func (h *haproxy) command(line string) (string, error) {
	c, err := net.DialTimeout("tcp", h.statsAddr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	return string(out), err
}

// mustCommand runs a state-changing command, which answers nothing when it
// succeeds.
func (h *haproxy) mustCommand(t *testing.T, line string) {
	t.Helper()
	out, err := h.command(line)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("haproxy %q: %v %s", line, err, out)
	}
}

// serverStat is one row of `show stat` for a server.
type serverStat struct {
	status string // UP, DOWN, MAINT, or a transition like "UP 1/2"
	check  string // last health check result, e.g. L7OK, L4CON
	scur   int    // current connections
	stot   int    // connections so far
	redisp int    // connections redispatched away from it (wredis)
}

// servers returns the backend's servers by name.
func (h *haproxy) servers() (map[string]serverStat, error) {
	out, err := h.command("show stat")
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) < 2 {
		return nil, fmt.Errorf("parsing show stat (%v): %q", err, out)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	field := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	num := func(rec []string, name string) int {
		n, _ := strconv.Atoi(field(rec, name))
		return n
	}
	st := map[string]serverStat{}
	for _, rec := range recs[1:] {
		if field(rec, "pxname") != backendName {
			continue
		}
		name := field(rec, "svname")
		if name == "BACKEND" {
			continue
		}
		st[name] = serverStat{
			status: field(rec, "status"),
			check:  field(rec, "check_status"),
			scur:   num(rec, "scur"),
			stot:   num(rec, "stot"),
			redisp: num(rec, "wredis"),
		}
	}
	return st, nil
}

// waitServer waits until HAProxy's view of server satisfies cond.
func (h *haproxy) waitServer(t *testing.T, server, what string, cond func(serverStat) bool) {
	t.Helper()
	waitUntil(t, 20*time.Second, fmt.Sprintf("haproxy: %s %s", server, what), func() (bool, string) {
		st, err := h.servers()
		if err != nil {
			return false, err.Error()
		}
		s := st[server]
		return cond(s), fmt.Sprintf("%+v", s)
	})
}

// drain takes server out of rotation the way an operator does before
// stopping it (disable server: maintenance) and waits until its last
// connection has ended.
func (h *haproxy) drain(t *testing.T, server string) {
	t.Helper()
	h.mustCommand(t, "disable server "+backendName+"/"+server)
	h.waitServer(t, server, "in maintenance with no connection", func(s serverStat) bool {
		return strings.HasPrefix(s.status, "MAINT") && s.scur == 0
	})
}

// undrain puts server back and waits until a health check found it UP.
func (h *haproxy) undrain(t *testing.T, server string) {
	t.Helper()
	h.mustCommand(t, "enable server "+backendName+"/"+server)
	h.waitServer(t, server, "UP", func(s serverStat) bool { return s.status == "UP" && s.check == "L7OK" })
}

// freeAddr returns 127.0.0.1:port for a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
