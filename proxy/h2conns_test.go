package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestShutdownDrainsInFlightHTTP2 is TestShutdownDrainsInFlightRequests over
// HTTP/2, whose connections h2Conns serves outside http.Server: Shutdown
// tells every HTTP/2 connection GOAWAY, waits for the stream in flight,
// which gets its whole response, and returns only after its handler
// finished.
func TestShutdownDrainsInFlightHTTP2(t *testing.T) {
	t.Parallel()
	const bodySize = 256 << 10
	entered, release := make(chan struct{}), make(chan struct{})
	var handlerDone atomic.Bool
	s := startServer(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.Header().Set("Content-Length", fmt.Sprint(bodySize))
		w.Write(bytes.Repeat([]byte("x"), bodySize))
		handlerDone.Store(true)
	})})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // a failed test must not leave the handler blocked
	addr := s.Addr().String()

	// An idle HTTP/2 connection: Shutdown tells it GOAWAY.
	idle := dialH2(t, addr)
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

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		var protos http.Protocols
		protos.SetHTTP2(true)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Protocols: &protos}}
		resp, err := c.Get("https://" + addr + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.ProtoMajor != 2 {
			err = fmt.Errorf("served over %s, want HTTP/2", resp.Proto)
		}
		done <- result{len(b), err}
	}()
	<-entered
	type shutdownResult struct {
		err          error
		afterHandler bool
	}
	shutdown := make(chan shutdownResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := s.Shutdown(ctx)
		shutdown <- shutdownResult{err, handlerDone.Load()}
	}()
	select {
	case err := <-goaway:
		if err != nil {
			t.Fatal(err)
		}
	case r := <-shutdown:
		t.Fatalf("Shutdown returned (%v) before telling HTTP/2 connections GOAWAY", r.err)
	}
	select {
	case r := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while an HTTP/2 stream was in flight", r.err)
	case r := <-done:
		t.Fatalf("request ended (%+v) before it was released", r)
	default:
	}
	releaseOnce()
	if r := <-done; r.err != nil || r.n != bodySize {
		t.Fatalf("in-flight request: %d bytes, %v; want all %d", r.n, r.err, bodySize)
	}
	r := <-shutdown
	if r.err != nil {
		t.Fatalf("Shutdown = %v", r.err)
	}
	if !r.afterHandler {
		t.Fatal("Shutdown returned before the handler finished")
	}
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
