package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// summary is the mean over passes of one cell for one peer.
type summary struct {
	Section string `json:"section"`
	Cell    string `json:"cell"`
	Server  string `json:"server"`
	Passes  int    `json:"passes"`
	// Rate is handshakes or requests per second; Spread is half the range
	// of the passes' rates, as a fraction of Rate: how noisy the run was.
	Rate   float64 `json:"rate"`
	Spread float64 `json:"rate_spread"`
	lo, hi float64
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	// ServerCPUus and ClientCPUus are microseconds of CPU per connection
	// (handshake cells) or per request (keep-alive cells).
	ServerCPUus float64 `json:"server_cpu_us"`
	ClientCPUus float64 `json:"client_cpu_us"`
	// UpstreamCPUus is the common upstream's, per connection or request.
	UpstreamCPUus float64 `json:"upstream_cpu_us"`
	// PeakRSS is the highest over the passes, in bytes.
	PeakRSS int64   `json:"peak_rss"`
	Resumed float64 `json:"resumed_ratio"`
	Errors  int64   `json:"errors"`
	// BytesPerConn and IdleConns belong to the idle cell.
	BytesPerConn float64 `json:"bytes_per_conn,omitempty"`
	IdleConns    int64   `json:"idle_conns,omitempty"`
	// Negotiated is the TLS version, suite and key exchange h2load saw.
	Negotiated string   `json:"negotiated,omitempty"`
	Messages   []string `json:"error_messages,omitempty"`
}

// summarize averages the records of each (cell, peer) over its passes.
// Passes that produced nothing count as errors, not as zeros in the mean.
func summarize(recs []record) []summary {
	var out []summary
	idx := map[[3]string]int{}
	for _, r := range recs {
		k := [3]string{r.Section, r.Cell, r.Server}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, summary{Section: r.Section, Cell: r.Cell, Server: r.Server})
		}
		s := &out[i]
		if r.Error != "" && !slices.Contains(s.Messages, r.Error) {
			s.Messages = append(s.Messages, r.Error)
		}
		s.Errors += r.Errors
		if r.Count == 0 {
			if r.Error == "" {
				s.Messages = append(s.Messages, "a pass measured nothing")
			}
			s.Errors++
			continue
		}
		if s.Passes == 0 || r.Rate < s.lo {
			s.lo = r.Rate
		}
		s.hi = max(s.hi, r.Rate)
		s.Passes++
		s.Rate += r.Rate
		s.P50Ms += r.P50Ms
		s.P99Ms += r.P99Ms
		s.ServerCPUus += perUnit(r.ServerCPU, r.Count)
		s.ClientCPUus += perUnit(r.ClientCPU, r.Count)
		s.UpstreamCPUus += perUnit(r.UpstreamCPU, r.Count)
		s.Resumed += r.Resumed
		s.BytesPerConn += r.BytesPerConn
		s.IdleConns += r.Count
		s.PeakRSS = max(s.PeakRSS, r.PeakRSS)
		if r.Cipher != "" {
			s.Negotiated = r.Cipher + " " + r.KeyExchange
		}
	}
	for i := range out {
		s := &out[i]
		if n := float64(s.Passes); n > 0 {
			s.Rate /= n
			if s.Rate > 0 {
				s.Spread = (s.hi - s.lo) / 2 / s.Rate
			}
			s.P50Ms /= n
			s.P99Ms /= n
			s.ServerCPUus /= n
			s.ClientCPUus /= n
			s.UpstreamCPUus /= n
			s.Resumed /= n
			s.BytesPerConn /= n
			s.IdleConns /= int64(s.Passes)
		}
	}
	return out
}

type header struct {
	machine  machine
	versions map[string]string
	o        *options
	probes   map[string]probeResult
	failed   map[string]string
	elapsed  time.Duration
}

var sectionTitles = map[string]string{
	sectionHandshake: "Handshake only (no request)",
	sectionGet:       "One GET per connection, proxied to the common upstream",
	sectionKeepAlive: "Keep-alive: many requests per connection, proxied to the common upstream",
	sectionIdle:      "Memory per idle TLS connection (connections offering h2, held open)",
}

// writeMarkdown prints the header and one table per section.
func writeMarkdown(w io.Writer, h header, sum []summary) {
	fmt.Fprintf(w, "## bench-peers\n\n")
	fmt.Fprintf(w, "Machine: %s, %d CPUs, Linux %s. %s. Figures are specific to this machine and run.\n",
		h.machine.CPU, h.machine.CPUs, h.machine.Kernel, h.machine.Go)
	var vs []string
	for _, k := range []string{"nginx", "haproxy", "caddy", "edgeproxy", "wrk", "h2load"} {
		vs = append(vs, k+": "+h.versions[k])
	}
	fmt.Fprintf(w, "Versions: %s.\n", strings.Join(vs, "; "))
	fmt.Fprintf(w, "Method: %d s per measurement, %d passes in alternating peer order, mean reported (± is half the range between passes; peak RSS: highest); "+
		"handshake cells: `edgeproxy bench --concurrency %d` offering X25519 and P-256; server CPU = utime+stime of all the server's processes; "+
		"2 workers/threads/GOMAXPROCS per peer; ratios are to nginx. Run took %s.\n",
		h.o.seconds, h.o.passes, h.o.concurrency, h.elapsed.Round(time.Second))
	var ps []string
	for _, name := range h.o.servers {
		p := h.probes[name]
		ps = append(ps, fmt.Sprintf("%s %s/%s", name, p.ALPN, p.Curve))
	}
	fmt.Fprintf(w, "A default Go client offering h2 negotiated (ALPN/key exchange): %s.\n", strings.Join(ps, ", "))
	for name, err := range h.failed {
		fmt.Fprintf(w, "**%s did not start**: %s\n", name, err)
	}
	for _, sec := range h.o.sections {
		var rows []summary
		for _, s := range sum {
			if s.Section == sec {
				rows = append(rows, s)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n### %s\n\n", sectionTitles[sec])
		if sec == sectionIdle {
			writeIdle(w, rows, h.o.idle)
		} else {
			writeLoad(w, sec, rows)
		}
		writeErrors(w, rows)
	}
}

// ratio returns a/b as "1.02×", or "" without a reference.
func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// nginxOf returns nginx's row of the same cell, if any.
func nginxOf(rows []summary, s summary) summary {
	for _, r := range rows {
		if r.Cell == s.Cell && r.Server == "nginx" {
			return r
		}
	}
	return summary{}
}

func ms(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

func writeLoad(w io.Writer, sec string, rows []summary) {
	unit, what := "conn", "hs/s"
	first := "cell"
	if sec == sectionKeepAlive {
		unit, what, first = "req", "req/s", "protocol"
	}
	fmt.Fprintf(w, "| %s | server | %s | ± | ×nginx | p50 ms | p99 ms | server CPU µs/%s | ×nginx | peak RSS MB | load gen CPU µs/%s | upstream CPU µs/%s |", first, what, unit, unit, unit)
	if sec != sectionKeepAlive {
		fmt.Fprint(w, " resumed |")
	}
	fmt.Fprint(w, " errors |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	if sec != sectionKeepAlive {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprint(w, "--:|\n")
	for _, s := range rows {
		n := nginxOf(rows, s)
		if s.Passes == 0 {
			fmt.Fprintf(w, "| %s | %s | failed | | | | | | | | | |", s.Cell, s.Server)
		} else {
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f%% | %s | %s | %s | %.0f | %s | %.1f | %.0f | %.0f |", s.Cell, s.Server,
				s.Rate, 100*s.Spread, ratio(s.Rate, n.Rate), ms(s.P50Ms), ms(s.P99Ms),
				s.ServerCPUus, ratio(s.ServerCPUus, n.ServerCPUus), float64(s.PeakRSS)/1e6, s.ClientCPUus, s.UpstreamCPUus)
		}
		if sec != sectionKeepAlive {
			fmt.Fprintf(w, " %.0f%% |", 100*s.Resumed)
		}
		fmt.Fprintf(w, " %d |\n", s.Errors)
	}
}

func writeIdle(w io.Writer, rows []summary, n int) {
	fmt.Fprintf(w, "| server | connections held (of %d) | kB per connection | ×nginx | peak RSS MB | errors |\n|---|--:|--:|--:|--:|--:|\n", n)
	for _, s := range rows {
		nx := nginxOf(rows, s)
		if s.Passes == 0 {
			fmt.Fprintf(w, "| %s | failed | | | | %d |\n", s.Server, s.Errors)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %s | %.1f | %d |\n", s.Server, s.IdleConns, s.BytesPerConn/1000,
			ratio(s.BytesPerConn, nx.BytesPerConn), float64(s.PeakRSS)/1e6, s.Errors)
	}
}

func writeErrors(w io.Writer, rows []summary) {
	var neg []string
	for _, s := range rows {
		if s.Negotiated != "" {
			neg = append(neg, s.Server+" "+s.Negotiated)
		}
	}
	if len(neg) > 0 {
		fmt.Fprintf(w, "\nh2load negotiated: %s.\n", strings.Join(neg, "; "))
	}
	var lines []string
	for _, s := range rows {
		for _, m := range s.Messages {
			lines = append(lines, fmt.Sprintf("- %s, %s: %s", s.Cell, s.Server, m))
		}
	}
	sort.Strings(lines)
	if len(lines) > 0 {
		fmt.Fprintf(w, "\nErrors:\n%s\n", strings.Join(lines, "\n"))
	}
}
