package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// Sections of the report, in the order they run.
const (
	sectionHandshake = "handshake"
	sectionGet       = "get"
	sectionKeepAlive = "keepalive"
	sectionIdle      = "idle"
)

var allSections = []string{sectionHandshake, sectionGet, sectionKeepAlive, sectionIdle}

// cell is one column of a section: one load against each peer in turn.
type cell struct {
	section, name string
	run           func(h *harness, s *server) (load, error)
}

// cells returns the cells of the given sections.
func cells(sections []string) []cell {
	var out []cell
	for _, sec := range sections {
		switch sec {
		case sectionHandshake, sectionGet:
			for _, v := range []string{"1.3", "1.2"} {
				for _, m := range []string{"full", "resume"} {
					name := fmt.Sprintf("TLS %s %s", v, map[string]string{"full": "full", "resume": "resumed"}[m])
					out = append(out, cell{section: sec, name: name, run: benchCell(v, m, sec == sectionGet)})
				}
			}
		case sectionKeepAlive:
			out = append(out,
				cell{section: sec, name: "HTTP/1.1 (wrk -c32)", run: wrkCell},
				cell{section: sec, name: "HTTP/2 (h2load -c16 -m8)", run: h2loadCell})
		case sectionIdle:
			out = append(out, cell{section: sec, name: "idle", run: idleCell})
		}
	}
	return out
}

// benchCell runs edgeproxy bench for one TLS version and mode. The client
// offers X25519 and P-256 only (GODEBUG=tlsmlkem=0): without it Go 1.24+
// offers X25519MLKEM768 first, which the Go peers accept and the OpenSSL 3.0
// peers cannot, and the cells would compare key exchanges, not servers.
func benchCell(version, mode string, httpGet bool) func(h *harness, s *server) (load, error) {
	return func(h *harness, s *server) (load, error) {
		argv := []string{h.o.edgeproxy, "bench", "--targets", addr(s.port), "--sni", "localhost", "--insecure",
			"--tls", version, "--mode", mode, "--concurrency", strconv.Itoa(h.o.concurrency),
			"--duration", h.o.duration().String(), "--json", "--quiet"}
		if httpGet {
			argv = append(argv, "--http")
		}
		out, cpu, err := runTool([]string{"GODEBUG=tlsmlkem=0"}, argv...)
		return parsed(parseBench, out, cpu, err)
	}
}

// parsed reads a tool's output with parse, even after a failed exit when
// the tool printed figures (edgeproxy bench exits non-zero on errors but
// reports them), and adds the tool's CPU time.
func parsed(parse func([]byte) (load, error), out []byte, cpu time.Duration, err error) (load, error) {
	if err != nil && len(out) == 0 {
		return load{ClientCPU: cpu}, err
	}
	l, perr := parse(out)
	l.ClientCPU = cpu
	if perr != nil {
		return l, perr
	}
	return l, err
}

func wrkCell(h *harness, s *server) (load, error) {
	out, cpu, err := runTool(nil, "wrk", "-t2", "-c32", "-d"+h.o.duration().String(), "--latency",
		"https://"+addr(s.port)+"/")
	return parsed(parseWrk, out, cpu, err)
}

func h2loadCell(h *harness, s *server) (load, error) {
	out, cpu, err := runTool(nil, "h2load", "-c16", "-m8", "-D", strconv.Itoa(h.o.seconds),
		"https://"+addr(s.port)+"/")
	l, err := parsed(parseH2load, out, cpu, err)
	if err == nil && l.ALPN != "h2" {
		return l, fmt.Errorf("h2load negotiated %q, not h2", l.ALPN)
	}
	return l, err
}

// idleCell opens h.o.idle connections offering h2 with bench/idleconns,
// holds them, and records the server's RSS growth. The server was restarted
// just before (see harness.measure), so its heap holds no free space left
// by earlier cells.
func idleCell(h *harness, s *server) (load, error) {
	before := sample(s.pid())
	cmd := exec.Command(h.o.idleconns, "-addr", addr(s.port), "-n", strconv.Itoa(h.o.idle))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return load{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return load{}, err
	}
	if err := cmd.Start(); err != nil {
		return load{}, err
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return load{}, fmt.Errorf("idleconns: %w", err)
	}
	var open, failed, h2 int64
	if _, err := fmt.Sscanf(line, "ready open=%d failed=%d h2=%d", &open, &failed, &h2); err != nil {
		return load{}, fmt.Errorf("idleconns said %q: %w", line, err)
	}
	// Let the server finish with the last connections' first frames; a
	// settling pause before reading a gauge, not synchronisation.
	time.Sleep(time.Second)
	after := sample(s.pid())
	l := load{Count: open, Errors: failed, RSSBefore: before.RSS, RSSAfter: after.RSS}
	if open > 0 {
		l.BytesPerConn = float64(after.RSS-before.RSS) / float64(open)
	}
	if h2 != open {
		return l, fmt.Errorf("%d of %d idle connections negotiated h2", h2, open)
	}
	return l, nil
}
