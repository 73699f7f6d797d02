package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
)

// TestShutdownDrainsInFlightHTTP2 is TestShutdownDrainsInFlightRequests over
// HTTP/2, whose connections h2Conns serves outside http.Server: Shutdown
// tells every HTTP/2 connection GOAWAY, waits for the stream in flight,
// which gets its whole response, and returns only after its handler
// finished.
func TestShutdownDrainsInFlightHTTP2(t *testing.T) {
	t.Parallel()
	d := startDrainCase(t)

	// An idle HTTP/2 connection: Shutdown tells it GOAWAY.
	idle := dialH2(t, d.s.Addr().String())
	openIdleH2(idle)
	goaway := make(chan error, 1)
	go func() {
		for {
			f, err := idle.fr.ReadFrame()
			if err != nil {
				goaway <- fmt.Errorf("idle connection ended without GOAWAY: %w", err)
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				if g.ErrCode != http2.ErrCodeNo {
					goaway <- fmt.Errorf("GOAWAY %v, want NO_ERROR", g.ErrCode)
				}
				close(goaway)
				return
			}
		}
	}()

	var protos http.Protocols
	protos.SetHTTP2(true)
	d.hold(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Protocols: &protos}}, 2)
	select {
	case err := <-goaway:
		if err != nil {
			t.Fatal(err)
		}
	case r := <-d.shutdown:
		t.Fatalf("Shutdown returned (%v) before telling HTTP/2 connections GOAWAY", r.err)
	}
	d.finish(t)
}

// TestShutdownClosesHTTP2WhenContextEnds: when Shutdown's context ends
// with an HTTP/2 stream still in flight, Shutdown reports it and closes the
// connection rather than leaving it served after the Server is gone.
func TestShutdownClosesHTTP2WhenContextEnds(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s := startServer(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	}), Timeouts: Timeouts{ReadHeader: time.Hour}}) // no PING closes the connection meanwhile
	h := dialH2(t, s.Addr().String())
	openIdleH2(h)
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock(), EndStream: true, EndHeaders: true})
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	for {
		f, err := h.fr.ReadFrame()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection is still open after Shutdown returned")
		}
		if err != nil {
			break // closed by Shutdown
		}
		if hf, ok := f.(*http2.MetaHeadersFrame); ok && hf.StreamID == 1 {
			t.Fatal("stream 1 answered while its handler was blocked")
		}
	}
}

// TestExchangeSize guards the size of the one allocation every proxied
// request makes for its exchange (#13): the 640-byte size class, down from
// 1,024 bytes. It measures; it does not time.
func TestExchangeSize(t *testing.T) {
	t.Parallel()
	if n := unsafe.Sizeof(exchange{}); n > 640 {
		t.Errorf("exchange is %d bytes, want at most 640 (a larger one takes the next size class)", n)
	}
}
