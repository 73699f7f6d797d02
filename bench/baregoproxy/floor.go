package main

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

// serveFloor is the Go floor of the handshake and idle-memory cells of
// scripts/bench-peers.sh (-floor): what crypto/tls and x/net/http2 cost per
// connection with nothing of a proxy around them, at their defaults and Go's
// (GOGC=100). It runs each connection's handshake on a goroutine of its own.
// A connection that negotiated h2 is served by x/net/http2's ServeConn,
// answering every request "ok", on a fresh goroutine: the handshake grew the
// stack of the goroutine it ran on, which an idle connection would keep.
// Any other connection is read until the client closes it, then closed with
// the close_notify TLS requires (RFC 8446 §6.1).
func serveFloor(ln net.Listener, cfg *tls.Config) error {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
	//lint:ignore SA1019 net/http cannot serve one connection; x/net's ServeConn remains supported
	srv := &http2.Server{}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		} else if err != nil {
			return err
		}
		go floorConn(srv, ok, tls.Server(c, cfg))
	}
}

//lint:ignore SA1019 see serveFloor
func floorConn(srv *http2.Server, h http.Handler, tc *tls.Conn) {
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
		//lint:ignore SA1019 see serveFloor
		go srv.ServeConn(tc, &http2.ServeConnOpts{Handler: h})
		return
	}
	var b [512]byte
	for {
		if _, err := tc.Read(b[:]); err != nil {
			break
		}
	}
	tc.Close()
}
