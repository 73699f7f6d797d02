package resumption

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// Metrics holds the resumption layer's Prometheus collectors. A nil *Metrics
// counts nothing.
type Metrics struct {
	unwrap     *prometheus.CounterVec
	wrap       *prometheus.CounterVec
	handshakes *prometheus.CounterVec
}

// Unwrap results, the values of the result label of
// edgeproxy_resumption_unwrap_total. ResultOpened counts identities the
// Layer opened and handed to crypto/tls, which may still refuse them (a
// TLS 1.3 binder that does not verify, a cipher suite or ALPN mismatch):
// completed resumptions are edgeproxy_resumption_handshakes_total
// {result="resumed"} (HandshakeResumed).
const (
	ResultOpened        = "opened"
	ResultMiss          = "miss"
	ResultExpired       = "expired"
	ResultBad           = "bad"
	ResultScopeMismatch = "scope_mismatch"
	ResultStoreError    = "store_error"
)

// Handshake results, the values of the result label of
// edgeproxy_resumption_handshakes_total, counted by ConnSession.HandshakeDone:
// what unwraps led to once the handshake ended.
const (
	// HandshakeResumed is a completed handshake that resumed a session the
	// Layer opened.
	HandshakeResumed = "resumed"
	// HandshakeFull is a completed full handshake, including those whose
	// opened session crypto/tls declined (cipher suite, client-auth).
	HandshakeFull = "full"
	// HandshakeFailed is a handshake that did not complete: a bad TLS 1.3
	// binder, a client that left before its Finished.
	HandshakeFailed = "failed"
)

// NewMetrics creates the collectors and registers them with reg, if reg is
// not nil. It returns an error if registration fails, for example because
// another Metrics is registered with reg already.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		unwrap:     promreg.CounterVec("edgeproxy_resumption_unwrap_total", "Session identities presented by clients, by mode and result: opened (handed to crypto/tls, which may still refuse it; completed resumptions are edgeproxy_resumption_handshakes_total{result=\"resumed\"}), miss, expired, bad, scope_mismatch, store_error.", "mode", "result"),
		handshakes: promreg.CounterVec("edgeproxy_resumption_handshakes_total", "Handshakes that ended, by mode and result: resumed (completed, with a session the resumption layer opened), full (completed without one), failed.", "mode", "result"),
		wrap:       promreg.CounterVec("edgeproxy_resumption_wrap_total", "Sessions handed to clients, by mode and result (ok, error: a decoy was sent).", "mode", "result"),
	}
	if err := promreg.Register(reg, m.unwrap, m.wrap, m.handshakes); err != nil {
		return nil, fmt.Errorf("resumption: registering metrics: %w", err)
	}
	return m, nil
}

// counter is the one method the hot path needs; it lets a nil *Metrics hand
// out no-op counters.
type counter interface{ Inc() }

type nopCounter struct{}

func (nopCounter) Inc() {}

// modeCounters are resolved once per Layer so a handshake does no label
// lookup.
type modeCounters struct {
	opened, miss, expired, bad, scopeMismatch, storeError counter
	wrapOK, wrapError                                     counter
	resumed, full, failed                                 counter
}

func (m *Metrics) forMode(mode string) *modeCounters {
	if m == nil {
		n := nopCounter{}
		return &modeCounters{n, n, n, n, n, n, n, n, n, n, n}
	}
	u := func(result string) counter { return m.unwrap.WithLabelValues(mode, result) }
	return &modeCounters{
		opened:        u(ResultOpened),
		miss:          u(ResultMiss),
		expired:       u(ResultExpired),
		bad:           u(ResultBad),
		scopeMismatch: u(ResultScopeMismatch),
		storeError:    u(ResultStoreError),
		wrapOK:        m.wrap.WithLabelValues(mode, "ok"),
		wrapError:     m.wrap.WithLabelValues(mode, "error"),
		resumed:       m.handshakes.WithLabelValues(mode, HandshakeResumed),
		full:          m.handshakes.WithLabelValues(mode, HandshakeFull),
		failed:        m.handshakes.WithLabelValues(mode, HandshakeFailed),
	}
}
