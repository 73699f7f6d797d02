//go:build !linux

package proxy

import "net"

// listenTCP listens on addr, with net.Listen's TCP keep-alive on every
// accepted connection.
func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
