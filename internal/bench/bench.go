// Package bench measures TLS handshakes against one or several servers in
// round robin: full handshakes (every connection a new client) against
// abbreviated ones (every connection offers the session of the previous one,
// to whichever node it lands on). It reports handshakes per second, latency
// percentiles, bytes on the wire per handshake, the resumed ratio, errors by
// kind, and the load generator's own CPU time, as text, JSON and an SVG chart.
//
// The load generator is built not to be the bottleneck: a fixed pool of
// Concurrency goroutines (no goroutine per connection), buffers reused per
// worker, latencies recorded in a fixed-size log-linear histogram per
// worker, and shared counters touched only for the progress display.
package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// Modes.
const (
	// ModeFull makes every connection a new client: a full handshake.
	ModeFull = "full"
	// ModeResume gives each worker one session (a warm-up connection, not
	// counted), then offers the latest session on every connection, moving
	// round robin over the targets.
	ModeResume = "resume"
	// ModeFirst makes every connection a new client that supports
	// resumption, like a browser's first visit: a full handshake after
	// which the server issues a session (a ticket, or a store write in the
	// stateful modes), which the client then drops. It is the full
	// handshake that a resumed one saves.
	ModeFirst = "first"
)

// Defaults for Config fields whose zero value means "use the default".
const (
	DefaultConcurrency   = 8
	DefaultDuration      = 5 * time.Second
	DefaultTimeout       = 10 * time.Second
	DefaultDrainTimeout  = 2 * time.Second
	DefaultProgressEvery = 250 * time.Millisecond
	// DefaultMaxRefused, plus Concurrency, is the default for
	// Config.MaxRefused.
	DefaultMaxRefused = 10
)

// Config configures a Run. Only Targets is required.
type Config struct {
	// Targets are host:port addresses, used in round robin: worker w's k-th
	// connection goes to Targets[(w+k) % len(Targets)], so with several
	// targets consecutive connections of a worker land on different nodes.
	Targets []string
	// Mode is ModeFull, ModeResume or ModeFirst. If empty, ModeFull.
	Mode string
	// TLSVersion is tls.VersionTLS12 or tls.VersionTLS13, used as both the
	// minimum and maximum. If zero, TLS 1.3.
	TLSVersion uint16
	// Concurrency is the number of workers, each with one connection at a
	// time. If zero, DefaultConcurrency.
	Concurrency int
	// Conns, if positive, is the number of measured connections; the run
	// ends when they are done. Otherwise Duration bounds the run.
	Conns int
	// Duration bounds the run when Conns is zero: no connection starts
	// after it. If zero, DefaultDuration.
	Duration time.Duration
	// ServerName is the SNI and the name verified. If empty, the host part
	// of each target (no SNI is sent for an IP address).
	ServerName string
	// Insecure skips certificate verification.
	Insecure bool
	// RootCAs verifies server certificates. If nil, the system roots.
	RootCAs *x509.CertPool
	// HTTP sends one "GET /" over each connection after the handshake and
	// reads the response; a status other than 2xx or 3xx is an error.
	// Without it the client closes right after the handshake with a
	// close_notify and reads until the server closes (which is also when
	// TLS 1.3 session tickets arrive).
	HTTP bool
	// Timeout bounds one connection: dial, handshake and what follows. If
	// zero, DefaultTimeout.
	Timeout time.Duration
	// DrainTimeout bounds waiting for the server to close after the
	// client's close_notify, when HTTP is false. If zero,
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Progress, if not nil, is called every ProgressEvery from one goroutine
	// while the measured run goes on, and once at its end.
	Progress func(Progress)
	// ProgressEvery is the progress interval. If zero, DefaultProgressEvery.
	ProgressEvery time.Duration
	// MaxRefused is how many dials in a row, over all targets, may be
	// refused before the run stops with a *RefusedError, so that a dead
	// target fails fast instead of counting refusals until Duration ends.
	// Workers dial the targets in turn, so while some target accepts, up to
	// Concurrency refusals come between two accepted dials: the bound must
	// exceed that. If zero, DefaultMaxRefused plus Concurrency.
	MaxRefused int
}

func (c *Config) mode() string {
	if c.Mode == "" {
		return ModeFull
	}
	return c.Mode
}

func (c *Config) version() uint16 {
	if c.TLSVersion == 0 {
		return tls.VersionTLS13
	}
	return c.TLSVersion
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Validate checks the configuration without I/O.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bench: "+format, a...)) }
	if len(c.Targets) == 0 {
		add("targets: at least one host:port is required")
	}
	for i, t := range c.Targets {
		if _, port, err := net.SplitHostPort(t); err != nil || port == "" {
			add("targets[%d]: %q: must be host:port", i, t)
		}
	}
	switch c.Mode {
	case "", ModeFull, ModeResume, ModeFirst:
	default:
		add("mode: %q: must be %s, %s or %s", c.Mode, ModeFull, ModeResume, ModeFirst)
	}
	switch c.TLSVersion {
	case 0, tls.VersionTLS12, tls.VersionTLS13:
	default:
		add("tls version: %#04x: must be TLS 1.2 or 1.3", c.TLSVersion)
	}
	if c.Concurrency < 0 {
		add("concurrency: must be positive, got %d", c.Concurrency)
	}
	if c.Conns < 0 {
		add("conns: must be positive, got %d", c.Conns)
	}
	if c.MaxRefused < 0 {
		add("max refused: must be positive, got %d", c.MaxRefused)
	}
	for name, d := range map[string]time.Duration{"duration": c.Duration, "timeout": c.Timeout,
		"drain timeout": c.DrainTimeout, "progress interval": c.ProgressEvery} {
		if d < 0 {
			add("%s: must be positive, got %q", name, d)
		}
	}
	return errors.Join(errs...)
}

// Progress is a snapshot of a running measurement.
type Progress struct {
	Elapsed  time.Duration
	Duration time.Duration // the bound when Conns is zero
	Conns    int64         // the bound when positive
	Done     int64         // finished connections
	Resumed  int64
	Errors   int64
	Final    bool // the last call, after the run ended
}

// Latency summarises handshake latencies: from TCP connected to the TLS
// handshake done, as the client sees it.
type Latency struct {
	P50, P90, P99, Max, Mean time.Duration
}

// Class is what the handshakes of one kind (full or resumed) cost.
type Class struct {
	// Handshakes is the number of connections of this kind that succeeded.
	Handshakes int64
	// BytesSent and BytesReceived are the TCP payload bytes up to the end
	// of the handshake, per handshake.
	BytesSent, BytesReceived float64
	// Latency of these handshakes.
	Latency Latency
}

// CurvePoint is one point of the latency distribution: Percentile percent
// of the handshakes took at most Latency.
type CurvePoint struct {
	Percentile float64
	Latency    time.Duration
}

// Result is the outcome of a Run. Connections = Full + Resumed + Errors
// always holds; warm-up connections are reported apart and counted in none
// of them.
type Result struct {
	Mode        string
	TLSVersion  uint16
	Targets     []string
	Concurrency int
	HTTP        bool
	// Elapsed is the measured time: from the end of the warm-up to the end
	// of the last connection.
	Elapsed time.Duration
	// Connections is the number of measured connections attempted.
	Connections int64
	// Full and Resumed count connections that succeeded with a full or an
	// abbreviated handshake; Errors those that failed, by kind in
	// ErrorsByKind (for example "dial_refused", "handshake_alert").
	Full, Resumed, Errors int64
	ErrorsByKind          map[string]int64
	// ErrorExamples holds one error message per kind.
	ErrorExamples map[string]string
	// CrossNode counts resumed connections whose session was issued by
	// another target than the one that resumed it.
	CrossNode int64
	// DrainTimeouts counts connections whose server did not close within
	// DrainTimeout after the client's close_notify (not errors: the
	// handshake succeeded, but throughput is then bounded by the wait).
	DrainTimeouts int64
	// Warmup counts the warm-up connections of mode resume (one per worker)
	// and how many of them failed.
	Warmup, WarmupErrors int64
	// Latency of all successful handshakes; FullStats and ResumedStats
	// split latency and bytes by kind.
	Latency                 Latency
	FullStats, ResumedStats Class
	// Curve is the latency distribution at fixed percentiles, for charts.
	Curve []CurvePoint
	// ClientCPU is the user+system CPU time this process used during the
	// measured time (getrusage), and CPUs the number of CPUs it could use.
	// When the servers run in the same process (edgeproxy demo), it includes
	// them.
	ClientCPU time.Duration
	CPUs      int
}

// HandshakesPerSecond is the rate of successful handshakes.
func (r *Result) HandshakesPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Full+r.Resumed) / r.Elapsed.Seconds()
}

// ResumedRatio is the share of successful handshakes that resumed, 0..1.
func (r *Result) ResumedRatio() float64 {
	if r.Full+r.Resumed == 0 {
		return 0
	}
	return float64(r.Resumed) / float64(r.Full+r.Resumed)
}

// CPUCores is the average number of CPUs the process kept busy.
func (r *Result) CPUCores() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return r.ClientCPU.Seconds() / r.Elapsed.Seconds()
}

// CPUShare is ClientCPU as a share (0..1) of all the CPU time the machine
// had during the run: near 1 means the load generator may be the
// bottleneck.
func (r *Result) CPUShare() float64 {
	if r.CPUs <= 0 {
		return 0
	}
	return r.CPUCores() / float64(r.CPUs)
}

// curvePercentiles are the points of Result.Curve.
var curvePercentiles = []float64{0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 97, 98, 99, 99.5, 99.9, 100}

// Run measures until Conns connections are done or Duration has passed, or
// ctx ends (then connections in progress are aborted and the result covers
// what was done, with ctx's error). It returns an error without a result
// only if cfg is invalid or no warm-up connection could get a session.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := newRunner(ctx, cfg)
	defer r.cancel(nil)
	res, err := r.run()
	if re := (*RefusedError)(nil); errors.As(err, &re) {
		return nil, err
	}
	return res, err
}
