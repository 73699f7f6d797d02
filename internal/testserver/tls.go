package testserver

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TLSDiscard starts a plain crypto/tls server on 127.0.0.1 with conf (which
// must hold a certificate): it completes each handshake, reads until the
// client closes (at most 10s), and closes. It stops when the test ends and
// returns its address.
func TLSDiscard(t testing.TB, conf *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Handshake runs a TLS client handshake with conf against addr. If it
// fails, Handshake waits until the server closes the connection before it
// returns the error: a server that records a failed handshake before
// closing (as edgeproxy does) has then recorded it, even when it sent an
// alert that ended the client's handshake earlier.
func Handshake(t testing.TB, addr string, conf *tls.Config) error {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, conf)
	if err := c.Handshake(); err != nil {
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, raw)
		return err
	}
	return nil
}
