package probe_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/edgeproxy/edgeproxy/internal/probe"
	"github.com/edgeproxy/edgeproxy/proxy"
)

func ExampleRun() {
	// A TLS 1.3 server on loopback with crypto/tls's default session tickets.
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

	rep, err := probe.Run(context.Background(), probe.Config{
		Addr:      ln.Addr().String(),
		Versions:  []uint16{tls.VersionTLS13},
		NoOpenSSL: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Versions[0].Verdicts[0])
	// Output: resumption: works (5/5 reused)
}
