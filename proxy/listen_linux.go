package proxy

import (
	"context"
	"net"
	"syscall"
)

// TCP keep-alive of client connections: what net.Listen gives every
// accepted connection by default (net.KeepAliveConfig's defaults).
const (
	keepAliveIdleSeconds     = 15
	keepAliveIntervalSeconds = 15
	keepAliveCount           = 9
)

// listenTCP listens on addr. Client connections keep TCP keep-alive as
// net.Listen sets it, but it is set once, on the listening socket, whose
// options Linux copies to every socket it accepts: net.Listen sets it on
// each accepted socket, four setsockopt calls per connection, a few µs of a
// resumed TLS 1.2 handshake's budget (#13).
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1, // inherited from the listening socket instead
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				for _, o := range [...]struct{ level, opt, v int }{
					{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdleSeconds},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveIntervalSeconds},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
				} {
					if serr = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
						return
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}
