package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/edgeproxy/edgeproxy/proxy"
)

// ticketRecorder is a one-entry tls.ClientSessionCache that records every
// ticket the server issues. Probe connections run one at a time in one
// goroutine, so it needs no lock.
type ticketRecorder struct {
	cs     *tls.ClientSessionState
	ticket []byte   // ticket of cs
	got    [][]byte // tickets received during the current connection
}

func (r *ticketRecorder) Get(string) (*tls.ClientSessionState, bool) { return r.cs, r.cs != nil }

func (r *ticketRecorder) Put(_ string, cs *tls.ClientSessionState) {
	if cs == nil {
		r.cs, r.ticket = nil, nil
		return
	}
	ticket, _, err := cs.ResumptionState()
	if err != nil {
		return
	}
	r.cs, r.ticket = cs, ticket
	r.got = append(r.got, ticket)
}

// probeVersion makes one connection and cfg.Reconnects more with Go's
// client, all at version v, each offering the latest session.
func probeVersion(ctx context.Context, cfg *Config, v uint16) VersionReport {
	vr := VersionReport{Version: proxy.VersionName(v)}
	rec := &ticketRecorder{}
	conf := &tls.Config{
		ServerName:         cfg.serverName(),
		InsecureSkipVerify: true, // probe looks at sessions, not certificates
		MinVersion:         v,
		MaxVersion:         v,
		ClientSessionCache: rec,
	}
	n := cfg.reconnects()
	var sizes []int
	for i := 0; i <= n; i++ {
		if ctx.Err() != nil {
			return vr
		}
		offered := rec.ticket
		rec.got = nil
		a, suite, err := connectOnce(ctx, cfg, conf)
		a.N = i
		for _, t := range rec.got {
			sizes = append(sizes, len(t))
			if !bytes.Equal(t, offered) {
				a.TicketChanged = true
			}
		}
		a.NewTickets = len(rec.got)
		if i == 0 {
			if err != nil {
				vr.Error = err.Error()
				vr.ConnectFailed = errors.As(err, new(*DialError))
				return vr
			}
			vr.Supported = true
			vr.CipherSuite = tls.CipherSuiteName(suite)
			vr.Tickets.PerConnection = len(rec.got)
		} else {
			vr.Resumption.Attempts++
			if a.Reused {
				vr.Resumption.Reused++
			}
			if err == nil {
				vr.Tickets.Reconnects++
				if a.TicketChanged {
					vr.Tickets.Changed++
				}
			}
		}
		if err != nil {
			a.Error = err.Error()
		}
		vr.Resumption.Conns = append(vr.Resumption.Conns, a)
	}
	if len(sizes) > 0 {
		t := &vr.Tickets
		t.Issued, t.Size, t.MinSize, t.MaxSize = true, sizes[0], sizes[0], sizes[0]
		for _, s := range sizes {
			t.MinSize, t.MaxSize = min(t.MinSize, s), max(t.MaxSize, s)
		}
	}
	return vr
}

// DialError is a connection that failed before TLS: the TCP dial to Addr.
type DialError struct {
	Addr string
	Err  error
}

// Error returns the dial error's text, which names the address.
func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// connectOnce makes one connection: handshake, then close_notify and a read
// until the server closes or TicketWait passes, so that TLS 1.3 tickets
// (sent after the handshake) reach the session cache.
func connectOnce(ctx context.Context, cfg *Config, conf *tls.Config) (Attempt, uint16, error) {
	var a Attempt
	timeout := orDefault(cfg.Timeout, DefaultTimeout)
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return a, 0, &DialError{Addr: cfg.Addr, Err: err}
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return a, 0, err
	}
	cs := tc.ConnectionState()
	a.Reused = cs.DidResume
	if err := tc.CloseWrite(); err == nil {
		raw.SetDeadline(time.Now().Add(orDefault(cfg.TicketWait, DefaultTicketWait)))
		io.Copy(io.Discard, tc) // ends at the server's close or the deadline
	}
	return a, cs.CipherSuite, nil
}
