package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"syscall"

	"go.uber.org/zap"
)

// Limits bound what clients can take from a node: connections, handshakes in
// flight, header bytes and HTTP/2 streams. Each field's zero value selects
// the default constant named in its doc; a negative value is refused by
// Validate. Per-route limits (body size, upstream pool size) live on
// RouteConfig.
type Limits struct {
	// MaxConnections caps client connections open at once, handshaking or
	// established. Over the cap a new connection is closed at accept, with
	// no goroutine spent on it. If zero, DefaultMaxConnections is used.
	// Either is lowered, with a warning, to what RLIMIT_NOFILE allows:
	// each client connection may need an upstream connection too.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP caps the connections one client address holds. If
	// zero, DefaultMaxConnectionsPerIP is used. Addresses are counted
	// whole (an IPv6 /64 is many addresses).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// MaxHandshakes caps TLS handshakes in progress, which is what a
	// handshake flood costs in CPU. Established connections are not
	// affected. Over the cap, as many new connections again wait up to
	// HandshakeQueueWait for a slot; the others are refused. A connection
	// holds its slot from accept until its handshake ends, so one that
	// sends nothing holds it until Timeouts.Handshake. If zero,
	// DefaultMaxHandshakes is used.
	MaxHandshakes int `yaml:"max_handshakes"`
	// MaxHeaderBytes caps a request's header block (request line and
	// headers, HTTP/1.1 and HTTP/2); a larger one gets 431. If zero,
	// DefaultMaxHeaderBytes is used.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// HTTP2MaxConcurrentStreams caps the streams one HTTP/2 connection may
	// have open. If zero, DefaultHTTP2MaxConcurrentStreams is used.
	HTTP2MaxConcurrentStreams int `yaml:"http2_max_concurrent_streams"`
}

// Defaults for Limits.
const (
	DefaultMaxConnections            = 10000
	DefaultMaxConnectionsPerIP       = 1000
	DefaultMaxHandshakes             = 256
	DefaultMaxHeaderBytes            = 32 << 10 // nginx: 4 x 8k large_client_header_buffers
	DefaultHTTP2MaxConcurrentStreams = 100
)

// fdReserve is the number of file descriptors kept out of the connection
// cap for listeners, log files, store and health-check connections.
const fdReserve = 128

// Validate refuses negative values; zero selects a default. Errors name the
// YAML field.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"limits.max_connections", l.MaxConnections},
		{"limits.max_connections_per_ip", l.MaxConnectionsPerIP},
		{"limits.max_handshakes", l.MaxHandshakes},
		{"limits.max_header_bytes", l.MaxHeaderBytes},
		{"limits.http2_max_concurrent_streams", l.HTTP2MaxConcurrentStreams},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns l with every zero field set to its default and
// MaxConnections lowered to what RLIMIT_NOFILE allows (see fdCap).
func (l Limits) withDefaults() Limits {
	l.MaxConnections = min(cmp.Or(l.MaxConnections, DefaultMaxConnections), fdCap(nofile()))
	l.MaxConnectionsPerIP = cmp.Or(l.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	l.MaxHandshakes = cmp.Or(l.MaxHandshakes, DefaultMaxHandshakes)
	l.MaxHeaderBytes = cmp.Or(l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	l.HTTP2MaxConcurrentStreams = cmp.Or(l.HTTP2MaxConcurrentStreams, DefaultHTTP2MaxConcurrentStreams)
	return l
}

// Fields lists the limits in force (defaults applied, the connection cap
// after the file descriptor clamp) for the start-up log line.
func (l Limits) Fields() []zap.Field {
	e := l.withDefaults()
	return []zap.Field{
		zap.Int("max_connections", e.MaxConnections),
		zap.Int("max_connections_per_ip", e.MaxConnectionsPerIP),
		zap.Int("max_handshakes", e.MaxHandshakes),
		zap.Duration("handshake_queue_wait", HandshakeQueueWait),
		zap.Int("max_header_bytes", e.MaxHeaderBytes),
		zap.Int("http2_max_concurrent_streams", e.HTTP2MaxConcurrentStreams),
	}
}

// nofile returns the soft RLIMIT_NOFILE (which the Go runtime raises to the
// hard limit at start), or 0 if it cannot be read.
func nofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// fdCap returns the most client connections a process with n file
// descriptors can hold: each may need an upstream connection too, and
// fdReserve are kept for everything else. It is unlimited when n is 0
// (unknown) or beyond an int, and at least 1.
func fdCap(n uint64) int {
	if n == 0 || n > math.MaxInt32 {
		return math.MaxInt
	}
	return max(1, (int(n)-fdReserve)/2)
}
