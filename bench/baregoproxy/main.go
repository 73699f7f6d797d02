// Command baregoproxy is the Go reference in scripts/bench-peers.sh:
// crypto/tls and httputil.ReverseProxy with their defaults, nothing tuned.
// It answers HTTP/1.1 and HTTP/2 (net/http's built-in h2) on a TLS listener
// and proxies every request to one upstream.
//
//	baregoproxy -listen 127.0.0.1:8443 -cert cert.pem -key key.pem \
//	    -upstream http://127.0.0.1:8080 [-ticket-key ticket.key]
//
// With -floor (no -upstream) it proxies nothing: it is the least Go's own
// TLS and HTTP/2 stack does per connection, the floor of the handshake and
// idle-memory cells (floor.go).
//
// The only settings it makes are those the harness makes for every peer:
// the certificate, TLS 1.2 and 1.3, X25519 and P-256, and (with
// -ticket-key) a session ticket key taken from the shared nginx-format key
// file, so no peer gets an advantage from its ticket key.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "baregoproxy: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8443", "TLS listen address")
	certFile := flag.String("cert", "", "certificate PEM file (required)")
	keyFile := flag.String("key", "", "private key PEM file (required)")
	upstream := flag.String("upstream", "", "upstream base URL (required)")
	ticketKey := flag.String("ticket-key", "", "nginx-format ticket key file (48 or 80 bytes); default: crypto/tls's own keys")
	floor := flag.Bool("floor", false, "proxy nothing: handshakes, and h2 connections answering \"ok\" (floor.go)")
	flag.Parse()
	if *certFile == "" || *keyFile == "" || (*upstream == "") != *floor {
		return errors.New("-cert and -key are required; -upstream is required without -floor, and refused with it")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates:     []tls.Certificate{cert},
		MinVersion:       tls.VersionTLS12,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
	}
	if *ticketKey != "" {
		k, err := readTicketKey(*ticketKey)
		if err != nil {
			return err
		}
		cfg.SetSessionTicketKeys([][32]byte{k})
	}
	if *floor {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		return serveFloor(ln, cfg)
	}
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-upstream %q: not an absolute URL", *upstream)
	}
	srv := &http.Server{
		Addr:      *listen,
		Handler:   httputil.NewSingleHostReverseProxy(u),
		TLSConfig: cfg,
		ErrorLog:  log.New(os.Stderr, "", 0),
	}
	return srv.ListenAndServeTLS("", "")
}

// readTicketKey returns the 32 bytes after the 16-byte name of the first key
// in an nginx-format key file: the secret crypto/tls derives its ticket
// cipher and MAC keys from.
func readTicketKey(path string) ([32]byte, error) {
	var k [32]byte
	b, err := os.ReadFile(path)
	if err != nil {
		return k, err
	}
	if len(b) != 48 && len(b) != 80 {
		return k, fmt.Errorf("-ticket-key %s: %d bytes, want 48 or 80", path, len(b))
	}
	copy(k[:], b[16:48])
	return k, nil
}
