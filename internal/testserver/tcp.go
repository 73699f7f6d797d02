package testserver

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// ServeTCP serves each connection accepted on a loopback listener with
// handle, on a goroutine of its own, until the test ends: then the listener
// and every connection are closed and the goroutines waited for. accepted,
// if not nil, counts the connections accepted.
func ServeTCP(tb testing.TB, accepted *atomic.Int64, handle func(net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if accepted != nil {
				accepted.Add(1)
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return ln
}
