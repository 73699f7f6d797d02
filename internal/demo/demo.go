package demo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/bench"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// Options configures Run.
type Options struct {
	FleetOptions
	// TLSVersion is the benchmark's TLS version. If zero, TLS 1.3.
	TLSVersion uint16
	// BenchDuration is how long each benchmark mode runs. If zero,
	// DefaultBenchDuration. BenchConns, if positive, bounds each mode by
	// connections instead.
	BenchDuration time.Duration
	BenchConns    int
	// Concurrency is the number of benchmark workers. If zero,
	// bench.DefaultConcurrency.
	Concurrency int
	// Serve is how long the fleet keeps serving after the benchmark. If
	// zero, until ctx ends (Ctrl-C).
	Serve time.Duration
	// Progress, if not nil, receives the benchmark's progress (standard
	// error); ProgressTTY draws a bar instead of plain lines.
	Progress    io.Writer
	ProgressTTY bool
}

// Validate checks the options without I/O.
func (o *Options) Validate() error {
	var errs []error
	if err := o.FleetOptions.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch o.TLSVersion {
	case 0, tls.VersionTLS12, tls.VersionTLS13:
	default:
		errs = append(errs, fmt.Errorf("demo: TLS version %#04x: must be 1.2 or 1.3", o.TLSVersion))
	}
	if o.BenchDuration < 0 || o.Serve < 0 {
		errs = append(errs, errors.New("demo: durations must not be negative"))
	}
	if o.BenchConns < 0 || o.Concurrency < 0 {
		errs = append(errs, errors.New("demo: bench conns and concurrency must not be negative"))
	}
	return errors.Join(errs...)
}

// Summary is what the demo's benchmark showed.
type Summary struct {
	Full, Resume *bench.Result
}

// Run starts the fleet, benchmarks it (full handshakes, then resumed ones,
// round robin over the nodes), writes what happened to w, then serves
// until ctx ends or Serve passes, and shuts everything down.
func Run(ctx context.Context, o Options, w io.Writer) (*Summary, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	f, err := StartFleet(ctx, o.FleetOptions)
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Close(sctx)
	}()
	writeFleet(w, f)

	addrs := f.Addrs()
	cfg := bench.Config{
		Targets: addrs, TLSVersion: o.TLSVersion, Concurrency: o.Concurrency,
		Conns: o.BenchConns, Duration: o.BenchDuration, ServerName: "localhost", Insecure: true,
	}
	if cfg.Conns == 0 && cfg.Duration == 0 {
		cfg.Duration = DefaultBenchDuration
	}
	bound := fmt.Sprintf("%s per mode", cfg.Duration)
	if cfg.Conns > 0 {
		bound = fmt.Sprintf("%d connections per mode", cfg.Conns)
	}
	v := o.TLSVersion
	if v == 0 {
		v = tls.VersionTLS13
	}
	fmt.Fprintf(w, "\nbenchmark: TLS %s, round robin over the %d nodes, %s: every connection a new client (full), then clients that come back with their session (resume)\n\n",
		proxy.VersionName(v), len(addrs), bound)

	sum := &Summary{}
	for _, mode := range []string{bench.ModeFull, bench.ModeResume} {
		c := cfg
		c.Mode = mode
		if o.Progress != nil {
			p := &bench.ProgressWriter{W: o.Progress, TTY: o.ProgressTTY, Label: mode}
			c.Progress = p.Update
		}
		r, err := bench.Run(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintln(w, "interrupted")
				return sum, nil
			}
			return sum, err
		}
		if mode == bench.ModeFull {
			sum.Full = r
		} else {
			sum.Resume = r
		}
	}
	if err := bench.WriteText(w, sum.Full, sum.Resume); err != nil {
		return sum, err
	}
	writeSummary(w, f, sum)
	if v == tls.VersionTLS13 {
		fmt.Fprintln(w, "  (in TLS 1.3 crypto/tls resumes with psk_dhe_ke: a resumed handshake skips the certificate and its signature\n"+
			"   but still runs the key exchange; with --tls 1.2 it skips the key exchange too)")
	}
	writeTry(w, f, o.Serve)

	if o.Serve > 0 {
		t := time.NewTimer(o.Serve)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	} else {
		<-ctx.Done()
	}
	fmt.Fprintln(w, "\nstopping")
	return sum, nil
}

func writeFleet(w io.Writer, f *Fleet) {
	fmt.Fprintf(w, "edgeproxy demo: %d proxy nodes on loopback, resumption mode %s (%s)\n", len(f.Nodes), f.Mode, f.Shared)
	fmt.Fprintf(w, "  upstream  %s  (the demo app)\n", f.Upstream)
	for i, n := range f.Nodes {
		fmt.Fprintf(w, "  node %d    https://%s", i+1, n.Addr())
		if a := n.AdminAddr(); a != nil {
			fmt.Fprintf(w, "  metrics http://%s/metrics", a)
		}
		fmt.Fprintln(w)
	}
}

// writeSummary states the outcome in one paragraph. When no returning
// client resumed, it says so plainly and gives no speed-up: the resume run
// then measured full handshakes, and comparing it with the full run would
// report noise as a gain (#14).
func writeSummary(w io.Writer, f *Fleet, s *Summary) {
	r, full := s.Resume, s.Full
	fmt.Fprintf(w, "\nsummary: resumed %.2f%% of handshakes of returning clients (%d of %d, %d on another node than the one that issued the session)\n",
		100*r.ResumedRatio(), r.Resumed, r.Full+r.Resumed, r.CrossNode)
	if sp := bench.Speedup(full, r); sp > 0 {
		fmt.Fprintf(w, "  resumed ÷ full: %.0f vs %.0f handshakes/s (%.2fx); p50 latency %.2fms vs %.2fms; %.0f vs %.0f bytes received per handshake\n",
			r.HandshakesPerSecond(), full.HandshakesPerSecond(), sp,
			float64(r.Latency.P50)/1e6, float64(full.Latency.P50)/1e6,
			r.ResumedStats.BytesReceived, full.FullStats.BytesReceived)
	} else if r.Resumed == 0 {
		fmt.Fprintf(w, "  no handshake resumed: every returning client got a full handshake, so there is no speed-up to show%s\n", noResumeHint(f))
	}
	fmt.Fprintf(w, "  client CPU %.0f%% of %d CPUs (the client and the %d nodes share this process)\n",
		100*r.CPUShare(), r.CPUs, len(f.Nodes))
	if f.Mode != "off" && r.Resumed > 0 && r.ResumedRatio() < 0.99 {
		fmt.Fprintln(w, "  warning: fewer than 99% of returning clients resumed")
	}
}

// noResumeHint says why a mode may resume nothing.
func noResumeHint(f *Fleet) string {
	switch f.Mode {
	case "off":
		return " (resumption is off)"
	case "sticky":
		return " (round robin sends each client to another node, which does not know its session)"
	case "redis", "memcached":
		return fmt.Sprintf(" (is the %s store reachable? the nodes' logs say; run with --verbose)", f.Mode)
	}
	return ""
}

// writeTry prints commands a person can run against the fleet, in one
// Write so a reader watching for its first line sees all of it.
func writeTry(w io.Writer, f *Fleet, serve time.Duration) {
	addrs := f.Addrs()
	until := "until Ctrl-C"
	if serve > 0 {
		until = "for " + serve.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nserving %s; try:\n", until)
	fmt.Fprintf(&b, "  openssl s_client -connect %s -reconnect -tls1_2 </dev/null 2>/dev/null | grep -E '^(New|Reused)'\n", addrs[0])
	fmt.Fprintf(&b, "  curl -k https://%s/hello\n", addrs[0])
	fmt.Fprintf(&b, "  edgeproxy probe %s --sni localhost\n", addrs[0])
	fmt.Fprintf(&b, "  edgeproxy bench --targets %s --mode both --insecure --sni localhost --chart bench.svg\n", strings.Join(addrs, ","))
	if len(f.Nodes) > 0 {
		if a := f.Nodes[0].AdminAddr(); a != nil {
			fmt.Fprintf(&b, "  curl -s http://%s/metrics | grep edgeproxy_tls_handshakes_total\n", a)
		}
	}
	io.WriteString(w, b.String())
}
