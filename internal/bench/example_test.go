package bench_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/edgeproxy/edgeproxy/internal/bench"
	"github.com/edgeproxy/edgeproxy/proxy"
)

func ExampleRun() {
	// A TLS server on loopback that issues session tickets.
	certs, _ := proxy.SelfSignedCerts()
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: certs.GetCertificate})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) { defer c.Close(); c.Read(make([]byte, 1)) }(c)
		}
	}()

	r, err := bench.Run(context.Background(), bench.Config{
		Targets:  []string{ln.Addr().String()},
		Mode:     bench.ModeResume,
		Conns:    50,
		Insecure: true, // the certificate is self-signed
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("connections %d = full %d + resumed %d + errors %d\n", r.Connections, r.Full, r.Resumed, r.Errors)
	// Output: connections 50 = full 0 + resumed 50 + errors 0
}
