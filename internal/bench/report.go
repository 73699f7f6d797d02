package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeproxy/edgeproxy/proxy"
)

// table is rows of cells, written with the first column aligned left and
// the others right.
type table [][]string

func (t table) write(b *strings.Builder) {
	var widths []int
	for _, row := range t {
		for i, c := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range t {
		var line strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				line.WriteString(c + pad)
			} else {
				line.WriteString("  " + pad + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// Speedup is how many times more handshakes per second b made than a (for
// a full run a and a resume run b: what resumption buys). It is 0 when a
// made none, or when b resumed none: then b measured full handshakes too,
// and a ratio would pass noise off as a speed-up (#14).
func Speedup(a, b *Result) float64 {
	if a == nil || b == nil || a.HandshakesPerSecond() == 0 || b.Resumed == 0 {
		return 0
	}
	return b.HandshakesPerSecond() / a.HandshakesPerSecond()
}

// noneResumed reports whether r is a resume run in which no handshake
// resumed.
func noneResumed(r *Result) bool {
	return r.Mode == ModeResume && r.Resumed == 0 && r.Connections > 0
}

// WriteText writes the results side by side as a table a person reads: one
// column per run, and with two runs (full, then resume) a column with the
// ratio of the second to the first (resume ÷ full) for every figure, left
// empty when the resume run resumed nothing. Errors follow with an example
// message per kind.
func WriteText(w io.Writer, results ...*Result) error {
	if len(results) == 0 {
		return nil
	}
	r0 := results[0]
	var b strings.Builder
	bound := fmt.Sprintf("%s per mode", round(r0.Elapsed))
	if len(results) == 1 {
		bound = round(r0.Elapsed).String()
	}
	fmt.Fprintf(&b, "TLS %s, %s, concurrency %d, %s", proxy.VersionName(r0.TLSVersion), targetsText(r0.Targets), r0.Concurrency, bound)
	if r0.HTTP {
		b.WriteString(", one GET / per connection")
	}
	b.WriteString("\n\n")

	var tab table
	two := len(results) == 2
	row := func(label string, cell func(r *Result) string, ratio string) {
		cells := []string{label}
		for _, r := range results {
			cells = append(cells, cell(r))
		}
		if two {
			cells = append(cells, ratio)
		}
		tab = append(tab, cells)
	}
	// Every ratio is second ÷ first, so a reader never guesses the
	// direction; latencies and bytes below 1x are what resumption saves.
	ratios := two && !noneResumed(results[1])
	ratio := func(f func(r *Result) float64) string {
		if !ratios {
			return ""
		}
		a, c := f(results[0]), f(results[1])
		if a == 0 || c == 0 {
			return ""
		}
		return fmt.Sprintf("%.2fx", c/a)
	}
	row("", func(r *Result) string { return r.Mode }, func() string {
		if ratios {
			return results[1].Mode + " ÷ " + results[0].Mode
		}
		return ""
	}())
	row("handshakes/s", func(r *Result) string { return fmt.Sprintf("%.1f", r.HandshakesPerSecond()) },
		ratio(func(r *Result) float64 { return r.HandshakesPerSecond() }))
	row("connections", func(r *Result) string { return fmt.Sprint(r.Connections) }, "")
	row("full / resumed / errors", func(r *Result) string { return fmt.Sprintf("%d / %d / %d", r.Full, r.Resumed, r.Errors) }, "")
	row("resumed", func(r *Result) string { return percent(r.ResumedRatio()) }, "")
	row("resumed on another node", func(r *Result) string {
		if r.Mode != ModeResume {
			return "-"
		}
		return fmt.Sprint(r.CrossNode)
	}, "")
	for _, p := range []struct {
		name string
		get  func(l Latency) time.Duration
	}{
		{"latency p50", func(l Latency) time.Duration { return l.P50 }},
		{"latency p90", func(l Latency) time.Duration { return l.P90 }},
		{"latency p99", func(l Latency) time.Duration { return l.P99 }},
		{"latency max", func(l Latency) time.Duration { return l.Max }},
	} {
		row(p.name, func(r *Result) string { return ms(p.get(r.Latency)) },
			ratio(func(r *Result) float64 { return float64(p.get(r.Latency)) }))
	}
	row("bytes sent / handshake", func(r *Result) string { return fmt.Sprintf("%.0f", bytesPer(r, false)) },
		ratio(func(r *Result) float64 { return bytesPer(r, false) }))
	row("bytes received / handshake", func(r *Result) string { return fmt.Sprintf("%.0f", bytesPer(r, true)) },
		ratio(func(r *Result) float64 { return bytesPer(r, true) }))
	row("client CPU time", func(r *Result) string { return fmt.Sprintf("%.2fs", r.ClientCPU.Seconds()) }, "")
	row("client CPU share", func(r *Result) string { return fmt.Sprintf("%.0f%% of %d CPUs", 100*r.CPUShare(), r.CPUs) }, "")
	tab.write(&b)
	b.WriteString("\n")
	for _, r := range results {
		writeNotes(&b, r, len(results) > 1)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeNotes(b *strings.Builder, r *Result, prefix bool) {
	p := ""
	if prefix {
		p = r.Mode + ": "
	}
	if r.Errors == 0 {
		fmt.Fprintf(b, "%serrors: none\n", p)
	} else {
		kinds := make([]string, 0, len(r.ErrorsByKind))
		for k := range r.ErrorsByKind {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		fmt.Fprintf(b, "%serrors: %d\n", p, r.Errors)
		for _, k := range kinds {
			fmt.Fprintf(b, "  %-22s %6d  e.g. %s\n", k, r.ErrorsByKind[k], r.ErrorExamples[k])
			if strings.HasSuffix(k, "_certificate") {
				b.WriteString("  (a self-signed server such as edgeproxy demo needs --insecure)\n")
			}
		}
	}
	if noneResumed(r) {
		fmt.Fprintf(b, "%sresumed: none of %d connections: every handshake was full, so this run measured full handshakes and no ratio is shown\n", p, r.Connections)
	}
	if r.Warmup > 0 {
		fmt.Fprintf(b, "%swarm-up: %d connection(s) to get a first session, not counted (%d failed)\n", p, r.Warmup, r.WarmupErrors)
	}
	if r.DrainTimeouts > 0 {
		fmt.Fprintf(b, "%s%d connection(s) waited the whole drain timeout for the server to close after close_notify; try --http\n", p, r.DrainTimeouts)
	}
}

// bytesPer is the average bytes per successful handshake in one direction.
func bytesPer(r *Result, received bool) float64 {
	n := r.FullStats.Handshakes + r.ResumedStats.Handshakes
	if n == 0 {
		return 0
	}
	f, s := r.FullStats.BytesSent, r.ResumedStats.BytesSent
	if received {
		f, s = r.FullStats.BytesReceived, r.ResumedStats.BytesReceived
	}
	return (f*float64(r.FullStats.Handshakes) + s*float64(r.ResumedStats.Handshakes)) / float64(n)
}

func targetsText(t []string) string {
	if len(t) == 1 {
		return t[0]
	}
	return fmt.Sprintf("%d targets round robin", len(t))
}

func percent(f float64) string {
	if f > 0.999 && f < 1 {
		return fmt.Sprintf("%.2f%%", 100*math.Floor(f*10000)/10000)
	}
	return fmt.Sprintf("%.1f%%", 100*f)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d
}

// JSON shapes: durations in milliseconds, ratios 0..1.
type (
	jsonLatency struct {
		P50  float64 `json:"p50"`
		P90  float64 `json:"p90"`
		P99  float64 `json:"p99"`
		Max  float64 `json:"max"`
		Mean float64 `json:"mean"`
	}
	jsonClass struct {
		Handshakes    int64       `json:"handshakes"`
		BytesSent     float64     `json:"bytes_sent_per_handshake"`
		BytesReceived float64     `json:"bytes_received_per_handshake"`
		LatencyMs     jsonLatency `json:"latency_ms"`
	}
	jsonPoint struct {
		Percentile float64 `json:"percentile"`
		Ms         float64 `json:"ms"`
	}
	jsonRun struct {
		Mode                string            `json:"mode"`
		TLS                 string            `json:"tls"`
		Targets             []string          `json:"targets"`
		Concurrency         int               `json:"concurrency"`
		HTTP                bool              `json:"http"`
		ElapsedSeconds      float64           `json:"elapsed_seconds"`
		Connections         int64             `json:"connections"`
		Full                int64             `json:"full"`
		Resumed             int64             `json:"resumed"`
		Errors              int64             `json:"errors"`
		ErrorsByKind        map[string]int64  `json:"errors_by_kind"`
		ErrorExamples       map[string]string `json:"error_examples,omitempty"`
		CrossNodeResumed    int64             `json:"cross_node_resumed"`
		DrainTimeouts       int64             `json:"drain_timeouts"`
		Warmup              int64             `json:"warmup_connections"`
		WarmupErrors        int64             `json:"warmup_errors"`
		HandshakesPerSecond float64           `json:"handshakes_per_second"`
		ResumedRatio        float64           `json:"resumed_ratio"`
		LatencyMs           jsonLatency       `json:"latency_ms"`
		BytesSent           float64           `json:"bytes_sent_per_handshake"`
		BytesReceived       float64           `json:"bytes_received_per_handshake"`
		FullHandshakes      jsonClass         `json:"full_handshakes"`
		ResumedHandshakes   jsonClass         `json:"resumed_handshakes"`
		LatencyCurve        []jsonPoint       `json:"latency_curve_ms"`
		ClientCPUSeconds    float64           `json:"client_cpu_seconds"`
		ClientCPUCores      float64           `json:"client_cpu_cores"`
		ClientCPUShare      float64           `json:"client_cpu_share"`
		CPUs                int               `json:"cpus"`
	}
	jsonReport struct {
		Runs    []jsonRun `json:"runs"`
		Speedup float64   `json:"speedup,omitempty"`
	}
)

func msf(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func jsonLat(l Latency) jsonLatency {
	return jsonLatency{P50: msf(l.P50), P90: msf(l.P90), P99: msf(l.P99), Max: msf(l.Max), Mean: msf(l.Mean)}
}

func jsonCls(c Class) jsonClass {
	return jsonClass{Handshakes: c.Handshakes, BytesSent: c.BytesSent, BytesReceived: c.BytesReceived, LatencyMs: jsonLat(c.Latency)}
}

// WriteJSON writes {"runs": [...]} with one object per result, and with two
// results "speedup": the second run's handshakes/s over the first's.
func WriteJSON(w io.Writer, results ...*Result) error {
	rep := jsonReport{Runs: []jsonRun{}}
	for _, r := range results {
		jr := jsonRun{
			Mode: r.Mode, TLS: proxy.VersionName(r.TLSVersion), Targets: r.Targets, Concurrency: r.Concurrency, HTTP: r.HTTP,
			ElapsedSeconds: r.Elapsed.Seconds(), Connections: r.Connections, Full: r.Full, Resumed: r.Resumed,
			Errors: r.Errors, ErrorsByKind: r.ErrorsByKind, ErrorExamples: r.ErrorExamples,
			CrossNodeResumed: r.CrossNode, DrainTimeouts: r.DrainTimeouts, Warmup: r.Warmup, WarmupErrors: r.WarmupErrors,
			HandshakesPerSecond: r.HandshakesPerSecond(), ResumedRatio: r.ResumedRatio(), LatencyMs: jsonLat(r.Latency),
			BytesSent: bytesPer(r, false), BytesReceived: bytesPer(r, true),
			FullHandshakes: jsonCls(r.FullStats), ResumedHandshakes: jsonCls(r.ResumedStats),
			LatencyCurve:     []jsonPoint{},
			ClientCPUSeconds: r.ClientCPU.Seconds(), ClientCPUCores: r.CPUCores(), ClientCPUShare: r.CPUShare(), CPUs: r.CPUs,
		}
		if jr.ErrorsByKind == nil {
			jr.ErrorsByKind = map[string]int64{}
		}
		for _, p := range r.Curve {
			jr.LatencyCurve = append(jr.LatencyCurve, jsonPoint{Percentile: p.Percentile, Ms: msf(p.Latency)})
		}
		rep.Runs = append(rep.Runs, jr)
	}
	if len(results) == 2 {
		rep.Speedup = Speedup(results[0], results[1])
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
