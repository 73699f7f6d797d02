package proxy

// Limits bound what clients can take from a node: connections, handshakes in
// flight, header bytes and HTTP/2 streams. Each field's zero value selects
// the default constant named in its doc; a negative value is refused by
// Validate. Per-route limits (body size, upstream pool size) live on
// RouteConfig.
type Limits struct {
	// MaxConnections caps client connections open at once, handshaking or
	// established. Over the cap a new connection is closed at accept, with
	// no goroutine spent on it. If zero, DefaultMaxConnections is used.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP caps the connections one client address holds. If
	// zero, DefaultMaxConnectionsPerIP is used.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// MaxHandshakes caps TLS handshakes in progress, which is what a
	// handshake flood costs in CPU. Established connections are not
	// affected. If zero, DefaultMaxHandshakes is used.
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
