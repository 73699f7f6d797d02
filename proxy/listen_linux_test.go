package proxy

import (
	"net"
	"syscall"
	"testing"
)

// acceptedOpts returns the socket options of a connection ln accepted that
// net.Listen sets on its own: keep-alive on, idle, interval, count, and
// TCP_NODELAY.
func acceptedOpts(t *testing.T, ln net.Listener) [5]int {
	t.Helper()
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc, err := s.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got [5]int
	var gerr error
	rc.Control(func(fd uintptr) {
		for i, o := range [...][2]int{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
			{syscall.IPPROTO_TCP, syscall.TCP_NODELAY},
		} {
			if got[i], err = syscall.GetsockoptInt(int(fd), o[0], o[1]); err != nil {
				gerr = err
			}
		}
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	return got
}

// TestListenTCPKeepAlive: connections accepted by listenTCP, which sets
// keep-alive once on the listening socket, have the keep-alive settings
// (and TCP_NODELAY) of those accepted by net.Listen.
func TestListenTCPKeepAlive(t *testing.T) {
	t.Parallel()
	std, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := acceptedOpts(t, std)
	if want[0] == 0 {
		t.Fatalf("net.Listen's accepted connection has no keep-alive: %v", want)
	}
	ln, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if got := acceptedOpts(t, ln); got != want {
		t.Fatalf("accepted by listenTCP: keepalive, idle, interval, count, nodelay = %v; net.Listen: %v", got, want)
	}
}
