package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// peer is one server compared by the harness.
type peer struct {
	// name identifies the peer in tables, JSON and BENCH_SERVERS.
	name string
	// template is the configuration template, "" for none.
	template string
	// command returns the command line for a rendered config (path "" when
	// template is "").
	command func(o *options, p params, config string) []string
	// sections are those the peer is measured in; nil: all.
	sections []string
}

// takes reports whether p is measured in section sec.
func (p peer) takes(sec string) bool { return p.sections == nil || slices.Contains(p.sections, sec) }

// allPeers lists the peers in their default order; nginx first, as the
// ratios are to nginx.
var allPeers = []peer{
	{name: "nginx", template: "nginx.conf", command: func(_ *options, _ params, c string) []string {
		return []string{"nginx", "-e", "stderr", "-c", c}
	}},
	{name: "haproxy", template: "haproxy.cfg", command: func(_ *options, _ params, c string) []string {
		return []string{"haproxy", "-db", "-f", c}
	}},
	{name: "caddy", template: "Caddyfile", command: func(_ *options, _ params, c string) []string {
		return []string{"caddy", "run", "--adapter", "caddyfile", "--config", c}
	}},
	{name: "barego", command: func(o *options, p params, _ string) []string {
		return []string{o.barego, "-listen", addr(p.Port), "-cert", p.Cert, "-key", p.Key,
			"-upstream", "http://" + addr(p.UpstreamPort), "-ticket-key", p.TicketKey}
	}},
	// gofloor is crypto/tls and x/net/http2 with nothing around them: the
	// least Go's own stack costs per handshake and per idle connection. It
	// proxies nothing, so it has no GET or keep-alive figures.
	{name: "gofloor", sections: []string{sectionHandshake, sectionIdle}, command: func(o *options, p params, _ string) []string {
		return []string{o.barego, "-floor", "-listen", addr(p.Port), "-cert", p.Cert, "-key", p.Key, "-ticket-key", p.TicketKey}
	}},
	{name: "edgeproxy", template: "edgeproxy.yaml", command: func(o *options, _ params, c string) []string {
		return []string{o.edgeproxy, "serve", "--config", c}
	}},
}

// upstreamPeer is the common upstream: not measured, started once.
var upstreamPeer = peer{name: "upstream", template: "upstream.nginx.conf", command: func(_ *options, _ params, c string) []string {
	return []string{"nginx", "-e", "stderr", "-c", c}
}}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// server is a running peer.
type server struct {
	peer
	port int
	cmd  *exec.Cmd
	log  string
	// probe is what a default client negotiated once the server was up.
	probe probeResult
}

// probeResult is what a client offering h2 and http/1.1, with Go's
// default key exchanges, negotiated.
type probeResult struct {
	ALPN  string `json:"alpn"`
	Curve string `json:"curve_default_go_client"`
}

// freePort returns a loopback port nothing listens on at the moment.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start renders p's config on a free port, starts it and waits until it
// completes a TLS handshake (plain TCP for the upstream).
func start(o *options, pr peer, base params, tlsProbe bool) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := base
	p.Port = port
	if pr.name == upstreamPeer.name {
		p.UpstreamPort = port
	}
	cfg := ""
	if pr.template != "" {
		if cfg, err = writeConfig(pr.template, p); err != nil {
			return nil, fmt.Errorf("%s: rendering %s: %w", pr.name, pr.template, err)
		}
	}
	argv := pr.command(o, p, cfg)
	s := &server{peer: pr, port: port, log: filepath.Join(o.work, fmt.Sprintf("%s.%d.log", pr.name, port))}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Dir = o.work
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.Env = append(os.Environ(), "GOMAXPROCS=2", "HOME="+o.work,
		"XDG_CONFIG_HOME="+o.work, "XDG_DATA_HOME="+o.work)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", pr.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("%s exited at start: %s", pr.name, tail(s.log))
		default:
		}
		if err := s.ready(tlsProbe); err == nil {
			break
		} else if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s not ready after 15s: %v: %s", pr.name, err, tail(s.log))
		}
		time.Sleep(50 * time.Millisecond) // polling a starting process, not synchronising a test
	}
	return s, nil
}

// ready tries one connection: a TLS handshake offering h2 and http/1.1
// with Go's default key exchanges (recorded in s.probe), or plain TCP.
func (s *server) ready(tlsProbe bool) error {
	c, err := net.DialTimeout("tcp", addr(s.port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if !tlsProbe {
		return nil
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}, ServerName: "localhost"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	st := tc.ConnectionState()
	s.probe = probeResult{ALPN: st.NegotiatedProtocol, Curve: st.CurveID.String()}
	return nil
}

// stop ends the server: SIGTERM to its process group, SIGKILL after 5s.
func (s *server) stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(-pgid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // waiting for an exit, bounded
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "(no output)"
	}
	return strings.Join(lines, " | ")
}

// version returns the first line a command prints about its version.
func version(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown: " + err.Error()
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
