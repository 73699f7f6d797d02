// Command peers is the side-by-side harness behind scripts/bench-peers.sh
// (issue #13): it starts nginx, HAProxy, Caddy, a bare Go ReverseProxy and
// edgeproxy configured alike in front of one common upstream, measures each
// in alternated passes, and prints one Markdown table per section.
//
// The script installs the peers, builds the Go programs and prepares the
// work directory (cert.pem, key.pem: ECDSA P-256; ticket.key: one 80-byte
// key from `edgeproxy keys gen`); this program does the rest. Figures are
// specific to the machine they were taken on.
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

type options struct {
	work                         string
	edgeproxy, barego, idleconns string
	seconds, passes, idle        int
	concurrency                  int
	servers, sections            []string
	jsonPath, rev                string
}

func (o *options) duration() time.Duration { return time.Duration(o.seconds) * time.Second }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench-peers: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	var o options
	var servers, sections string
	fs.StringVar(&o.work, "work", "", "work directory holding cert.pem, key.pem and ticket.key (required)")
	fs.StringVar(&o.edgeproxy, "edgeproxy", "edgeproxy", "edgeproxy binary")
	fs.StringVar(&o.barego, "barego", "baregoproxy", "bench/baregoproxy binary")
	fs.StringVar(&o.idleconns, "idleconns", "idleconns", "bench/idleconns binary")
	fs.IntVar(&o.seconds, "seconds", 3, "seconds per measurement")
	fs.IntVar(&o.passes, "passes", 2, "passes over the peers, in alternating order")
	fs.IntVar(&o.idle, "idle", 3000, "idle connections for the memory cell")
	fs.IntVar(&o.concurrency, "concurrency", 8, "edgeproxy bench workers in the handshake cells")
	fs.StringVar(&servers, "servers", "nginx,haproxy,caddy,barego,gofloor,edgeproxy", "peers to measure")
	fs.StringVar(&sections, "sections", strings.Join(allSections, ","), "sections to run")
	fs.StringVar(&o.jsonPath, "json", "", "raw results file (default: WORK/results.json)")
	fs.StringVar(&o.rev, "rev", "", "edgeproxy revision, for the header")
	from := fs.String("from", "", "print the tables of an earlier run's results file, run nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from != "" {
		return reprint(*from)
	}
	if o.work == "" {
		return errors.New("-work is required")
	}
	if o.seconds <= 0 || o.passes <= 0 || o.idle <= 0 || o.concurrency <= 0 {
		return errors.New("-seconds, -passes, -idle and -concurrency must be positive")
	}
	o.servers = strings.Split(servers, ",")
	for _, s := range o.servers {
		if !slices.ContainsFunc(allPeers, func(p peer) bool { return p.name == s }) {
			return fmt.Errorf("-servers: unknown peer %q", s)
		}
	}
	o.sections = strings.Split(sections, ",")
	for _, s := range o.sections {
		if !slices.Contains(allSections, s) {
			return fmt.Errorf("-sections: unknown section %q (want %s)", s, strings.Join(allSections, ", "))
		}
	}
	o.jsonPath = cmpOr(o.jsonPath, filepath.Join(o.work, "results.json"))

	base := newParams(o.work, o.idle)
	if err := prepare(base); err != nil {
		return err
	}
	h := &harness{o: &o, base: base, started: time.Now()}
	defer h.stopAll()
	return h.run()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// prepare writes the files derived from the work directory's cert, key and
// ticket key: HAProxy's combined PEM, its base64 ticket key file, and the
// nginx temp directories.
func prepare(p params) error {
	cert, err := os.ReadFile(p.Cert)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(p.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.PEM, append(append(cert, '\n'), key...), 0o600); err != nil {
		return err
	}
	tk, err := os.ReadFile(p.TicketKey)
	if err != nil {
		return err
	}
	keys, err := haproxyTicketKeys(tk)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.HAProxyTicketKeys, keys, 0o600); err != nil {
		return err
	}
	for _, d := range []string{"tmp-nginx", "tmp-upstream"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// haproxyTicketSlots is HAProxy's TLS_TICKETS_NO default: its key file must
// hold at least that many keys.
const haproxyTicketSlots = 3

// haproxyTicketKeys turns an nginx-format key file (one 48- or 80-byte key)
// into HAProxy's: the same key base64-encoded on each of its slots, so that
// whichever slot HAProxy encrypts with, it is the key nginx and edgeproxy
// use.
func haproxyTicketKeys(nginxKey []byte) ([]byte, error) {
	if len(nginxKey) != 48 && len(nginxKey) != 80 {
		return nil, fmt.Errorf("ticket key file: %d bytes, want one 48- or 80-byte key", len(nginxKey))
	}
	line := base64.StdEncoding.EncodeToString(nginxKey) + "\n"
	return []byte(strings.Repeat(line, haproxyTicketSlots)), nil
}

// harness runs the cells against the peers.
type harness struct {
	o       *options
	base    params
	started time.Time
	up      *server
	servers map[string]*server
	records []record
	probes  map[string]probeResult
	// failed holds the peers that did not start, with why.
	failed map[string]string
}

// record is one measurement: one cell, one peer, one pass.
type record struct {
	Section string `json:"section"`
	Cell    string `json:"cell"`
	Server  string `json:"server"`
	Pass    int    `json:"pass"`
	// Order is the peer's position in the pass (passes alternate order).
	Order int `json:"order"`
	load
	// ServerCPU is utime+stime of all the server's processes over the run.
	ServerCPU time.Duration `json:"server_cpu_ns"`
	// UpstreamCPU is the same for the common upstream.
	UpstreamCPU time.Duration `json:"upstream_cpu_ns"`
	// PeakRSS is VmHWM summed over the server's processes; PeakReset says
	// whether it was reset before the run (else it is the peak since start).
	PeakRSS   int64  `json:"peak_rss"`
	PeakReset bool   `json:"peak_reset"`
	Procs     int    `json:"server_processes"`
	Error     string `json:"error,omitempty"`
}

func (h *harness) run() error {
	up, err := start(h.o, upstreamPeer, h.base, false)
	if err != nil {
		return err
	}
	h.up = up
	h.base.UpstreamPort = up.port
	h.servers = map[string]*server{}
	h.probes = map[string]probeResult{}
	h.failed = map[string]string{}
	var running []string
	for _, name := range h.o.servers {
		s, err := h.startPeer(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-peers: %v: measuring without it\n", err)
			h.failed[name] = err.Error()
			continue
		}
		h.probes[name] = s.probe
		running = append(running, name)
	}
	if len(running) == 0 {
		return errors.New("no peer started")
	}
	h.o.servers = running
	cs := cells(h.o.sections)
	total := 0
	for _, c := range cs {
		total += h.o.passes * len(h.taking(c.section))
	}
	fmt.Fprintf(os.Stderr, "bench-peers: %d measurements of %ds (work dir %s)\n", total, h.o.seconds, h.o.work)
	n := 0
	for _, c := range cs {
		for pass := range h.o.passes {
			order := h.taking(c.section)
			if pass%2 == 1 {
				slices.Reverse(order)
			}
			for i, name := range order {
				n++
				rec := h.measure(c, name, pass+1, i+1)
				h.records = append(h.records, rec)
				fmt.Fprintf(os.Stderr, "[%d/%d] %s %s, %s, pass %d: %s\n", n, total, c.section, c.name, name, pass+1, progressText(rec))
			}
		}
	}
	h.stopAll()
	return h.report()
}

// taking returns the running peers measured in section sec, in order.
func (h *harness) taking(sec string) []string {
	var out []string
	for _, name := range h.o.servers {
		if peerNamed(name).takes(sec) {
			out = append(out, name)
		}
	}
	return out
}

// peerNamed returns the peer called name, which -servers was checked for.
func peerNamed(name string) peer {
	return allPeers[slices.IndexFunc(allPeers, func(p peer) bool { return p.name == name })]
}

func (h *harness) startPeer(name string) (*server, error) {
	s, err := start(h.o, peerNamed(name), h.base, true)
	if err != nil {
		return nil, err
	}
	h.servers[name] = s
	return s, nil
}

// measure runs one cell against one peer and reads the server's processes
// before and after. The idle cell restarts the peer first.
func (h *harness) measure(c cell, name string, pass, order int) record {
	rec := record{Section: c.section, Cell: c.name, Server: name, Pass: pass, Order: order}
	s := h.servers[name]
	if c.section == sectionIdle {
		s.stop()
		var err error
		if s, err = h.startPeer(name); err != nil {
			rec.Error = err.Error()
			return rec
		}
	}
	rec.PeakReset = resetPeak(s.pid())
	before, upBefore := sample(s.pid()), sample(h.up.pid())
	l, err := c.run(h, s)
	after, upAfter := sample(s.pid()), sample(h.up.pid())
	rec.load = l
	rec.ServerCPU = after.CPU - before.CPU
	rec.UpstreamCPU = upAfter.CPU - upBefore.CPU
	rec.PeakRSS = after.Peak
	rec.Procs = after.Procs
	if err != nil {
		rec.Error = err.Error()
	}
	return rec
}

func progressText(r record) string {
	if r.Error != "" && r.Count == 0 {
		return "error: " + r.Error
	}
	var s string
	switch r.Section {
	case sectionIdle:
		s = fmt.Sprintf("%d conns, %.1f kB/conn", r.Count, r.BytesPerConn/1000)
	default:
		s = fmt.Sprintf("%.0f/s, server CPU %.0f µs each", r.Rate, perUnit(r.ServerCPU, r.Count))
	}
	if r.Error != "" {
		s += " (error: " + r.Error + ")"
	}
	return s
}

// perUnit is d in microseconds per one of n.
func perUnit(d time.Duration, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

func (h *harness) stopAll() {
	for _, s := range h.servers {
		s.stop()
	}
	h.servers = map[string]*server{}
	h.up.stop()
	h.up = nil
}

// machine describes where the figures were taken.
type machine struct {
	CPU    string `json:"cpu"`
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

func readMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func (h *harness) versions() map[string]string {
	return map[string]string{
		"nginx":     strings.TrimPrefix(version("nginx", "-v"), "nginx version: "),
		"haproxy":   word(version("haproxy", "-v"), 2),
		"caddy":     version("caddy", "version"),
		"wrk":       word(version("wrk", "-v"), 1),
		"h2load":    word(version("h2load", "--version"), 1),
		"edgeproxy": cmpOr(h.o.rev, "unknown"),
	}
}

// word returns the i-th space-separated word of s, or s when it has fewer.
func word(s string, i int) string {
	if f := strings.Fields(s); len(f) > i {
		return f[i]
	}
	return s
}

// results is the raw results file.
type results struct {
	Started  time.Time              `json:"started"`
	Elapsed  float64                `json:"elapsed_seconds"`
	Machine  machine                `json:"machine"`
	Versions map[string]string      `json:"versions"`
	Options  resultOptions          `json:"options"`
	Probes   map[string]probeResult `json:"probes"`
	Failed   map[string]string      `json:"failed_to_start,omitempty"`
	Summary  []summary              `json:"summary"`
	Records  []record               `json:"records"`
}

type resultOptions struct {
	Seconds     int      `json:"seconds"`
	Passes      int      `json:"passes"`
	Idle        int      `json:"idle"`
	Concurrency int      `json:"concurrency"`
	Servers     []string `json:"servers"`
	Sections    []string `json:"sections"`
}

// reprint prints the tables of a results file again.
func reprint(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	o := &options{seconds: r.Options.Seconds, passes: r.Options.Passes, idle: r.Options.Idle,
		concurrency: r.Options.Concurrency, servers: r.Options.Servers, sections: r.Options.Sections}
	writeMarkdown(os.Stdout, header{machine: r.Machine, versions: r.Versions, o: o, probes: r.Probes, failed: r.Failed,
		elapsed: time.Duration(r.Elapsed * float64(time.Second))}, summarize(r.Records))
	return nil
}

func (h *harness) report() error {
	m := readMachine()
	vers := h.versions()
	sum := summarize(h.records)
	out := results{
		Started: h.started, Elapsed: time.Since(h.started).Seconds(), Machine: m, Versions: vers,
		Options: resultOptions{Seconds: h.o.seconds, Passes: h.o.passes, Idle: h.o.idle,
			Concurrency: h.o.concurrency, Servers: h.o.servers, Sections: h.o.sections},
		Probes: h.probes, Failed: h.failed, Summary: sum, Records: h.records,
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(h.o.jsonPath, b, 0o644); err != nil {
		return err
	}
	writeMarkdown(os.Stdout, header{machine: m, versions: vers, o: h.o, probes: h.probes, failed: h.failed, elapsed: time.Since(h.started)}, sum)
	fmt.Printf("\nraw results: %s\n", h.o.jsonPath)
	return nil
}
