// Command idleconns opens N TLS connections to a server, offering h2 like a
// browser, and holds them idle, so that scripts/bench-peers.sh can read the
// server's memory per idle connection.
//
//	idleconns -addr 127.0.0.1:8443 -n 3000
//
// Each connection completes its handshake and, when h2 was negotiated,
// sends the HTTP/2 client preface and an empty SETTINGS frame, reads frames
// up to the server's SETTINGS and acknowledges it: the state of an idle
// browser connection. When all are open it prints one line
//
//	ready open=N failed=F h2=H
//
// on standard output and holds the connections until standard input is
// closed, then closes them and exits.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "idleconns: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "", "host:port to connect to (required)")
	n := flag.Int("n", 3000, "connections to open")
	parallel := flag.Int("parallel", 8, "connections opened at once")
	timeout := flag.Duration("timeout", 10*time.Second, "bound on opening one connection")
	flag.Parse()
	if *addr == "" || *n <= 0 || *parallel <= 0 {
		return errors.New("-addr is required, -n and -parallel must be positive")
	}
	cfg := &tls.Config{
		InsecureSkipVerify: true, // the harness's self-signed certificate; nothing is exchanged
		NextProtos:         []string{"h2", "http/1.1"},
		CurvePreferences:   []tls.CurveID{tls.X25519, tls.CurveP256},
		ServerName:         "localhost",
	}

	var (
		mu       sync.Mutex
		conns    []net.Conn
		failed   int
		h2       int
		firstErr error
	)
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				c, isH2, err := open(*addr, cfg, *timeout)
				mu.Lock()
				if err != nil {
					failed++
					firstErr = cmpErr(firstErr, err)
				} else {
					conns = append(conns, c)
					if isH2 {
						h2++
					}
				}
				mu.Unlock()
			}
		}()
	}
	for range *n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "idleconns: first error: %v\n", firstErr)
	}
	fmt.Printf("ready open=%d failed=%d h2=%d\n", len(conns), failed, h2)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// open dials, handshakes and, on h2, brings the HTTP/2 connection to its
// idle state.
func open(addr string, cfg *tls.Config, timeout time.Duration) (net.Conn, bool, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, false, err
	}
	isH2 := c.ConnectionState().NegotiatedProtocol == "h2"
	if isH2 {
		if err := h2Idle(c); err != nil {
			c.Close()
			return nil, false, fmt.Errorf("h2 preface: %w", err)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, isH2, nil
}

const (
	frameSettings = 0x4
	flagAck       = 0x1
)

// h2Idle sends the client preface and an empty SETTINGS frame, then reads
// frames until the server's SETTINGS, and acknowledges it.
func h2Idle(c net.Conn) error {
	preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	settings := []byte{0, 0, 0, frameSettings, 0, 0, 0, 0, 0}
	if _, err := c.Write(append([]byte(preface), settings...)); err != nil {
		return err
	}
	r := bufio.NewReaderSize(c, 512)
	var hdr [9]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		length := int(hdr[0])<<16 | int(binary.BigEndian.Uint16(hdr[1:3]))
		if _, err := r.Discard(length); err != nil {
			return err
		}
		if hdr[3] == frameSettings && hdr[4]&flagAck == 0 {
			ack := []byte{0, 0, 0, frameSettings, flagAck, 0, 0, 0, 0}
			_, err := c.Write(ack)
			return err
		}
	}
}
