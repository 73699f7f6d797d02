//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// probe reports whether an idle connection is still open with nothing to
// read: a peek that does not wait finds neither the upstream's FIN nor
// unasked bytes. A connection it cannot look into counts as open.
func probe(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	open := true
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && open
}
