package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/app"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// goServer starts a plain crypto/tls server on loopback that completes the
// handshake, reads until the client closes, and closes. It stops at the end
// of the test.
func goServer(t testing.TB, ticketsDisabled bool) string {
	t.Helper()
	certs, err := proxy.SelfSignedCerts()
	if err != nil {
		t.Fatal(err)
	}
	return testserver.TLSDiscard(t, &tls.Config{
		GetCertificate:         certs.GetCertificate,
		SessionTicketsDisabled: ticketsDisabled,
	})
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// fleet starts n in-process edgeproxy nodes (mode tickets) sharing one
// generated key ring, in front of the built-in demo app, and returns their
// addresses.
func fleet(t testing.TB, n int) []string {
	t.Helper()
	holder := ticketkeys.NewHolder(ticketkeys.HolderConfig{})
	src, err := ticketkeys.NewGenerateSource(holder, ticketkeys.GenerateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		src.Close()
		holder.Close()
	})
	var addrs []string
	for i := 0; i < n; i++ {
		off := ""
		noAccess := false
		cfg := config.Config{
			Listen: "127.0.0.1:0",
			Admin:  &off,
			Log:    config.Log{Access: &noAccess},
		}
		a, err := app.New(app.Options{Config: &cfg, SharedKeys: holder, Logger: zap.NewNop(), BuiltinUpstream: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("shutdown: %v", err)
			}
		})
		addrs = append(addrs, a.Addr().String())
	}
	return addrs
}

// checkCounts fails the test unless the result's counts add up.
func checkCounts(t *testing.T, r *Result, wantConns int64) {
	t.Helper()
	var byKind int64
	for _, n := range r.ErrorsByKind {
		byKind += n
	}
	if r.Connections != wantConns || r.Full+r.Resumed+r.Errors != r.Connections || byKind != r.Errors {
		t.Fatalf("counts: connections %d (want %d) = full %d + resumed %d + errors %d (by kind %d)",
			r.Connections, wantConns, r.Full, r.Resumed, r.Errors, byKind)
	}
	if r.FullStats.Handshakes != r.Full || r.ResumedStats.Handshakes != r.Resumed {
		t.Fatalf("class stats %d/%d disagree with full %d, resumed %d", r.FullStats.Handshakes, r.ResumedStats.Handshakes, r.Full, r.Resumed)
	}
}
