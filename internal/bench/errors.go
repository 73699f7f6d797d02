package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// phaseError is a connection failure and the step it happened in: dial,
// handshake or http.
type phaseError struct {
	phase string
	err   error
}

func (e *phaseError) Error() string { return e.phase + ": " + e.err.Error() }
func (e *phaseError) Unwrap() error { return e.err }

// RefusedError stops a run whose dials were refused Dials times in a row:
// nothing listens at the targets.
type RefusedError struct {
	// Dials is how many dials in a row were refused.
	Dials int64
	// Target is the address that refused the last one.
	Target string
	// Err is the last dial error.
	Err error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("bench: %d connections in a row were refused, the last by %s: is the target running? (%v)", e.Dials, e.Target, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// statusError is an HTTP response that was not 2xx or 3xx.
type statusError struct{ line string }

func (e *statusError) Error() string { return "bench: unexpected response " + e.line }

// kindOf names an error for ErrorsByKind: the phase, an underscore, and the
// cause (refused, reset, eof, timeout, alert, certificate, not_tls, status,
// other), for example "handshake_alert".
func kindOf(err error) string {
	phase := "other"
	var pe *phaseError
	if errors.As(err, &pe) {
		phase = pe.phase
	}
	return phase + "_" + causeOf(err)
}

func causeOf(err error) string {
	var (
		ne     net.Error
		alert  tls.AlertError
		ralert *net.OpError
		cve    *tls.CertificateVerificationError
		uae    x509.UnknownAuthorityError
		hne    x509.HostnameError
		cie    x509.CertificateInvalidError
		rhe    tls.RecordHeaderError
		se     *statusError
	)
	switch {
	case errors.As(err, &se):
		return "status"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, net.ErrClosed):
		return "aborted"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return "certificate"
	case errors.As(err, &alert):
		return "alert"
	case errors.As(err, &rhe):
		return "not_tls"
	case errors.As(err, &ralert) && ralert.Op == "remote error":
		return "alert"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// isClosed reports whether err only says the peer closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}
