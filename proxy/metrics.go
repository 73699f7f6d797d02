package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// Handshake failure reasons, the values of the reason label of
// edgeproxy_tls_handshake_errors_total.
const (
	ReasonTimeout        = "timeout"
	ReasonClientClosed   = "client_closed"
	ReasonBadClientHello = "bad_client_hello"
	ReasonVersion        = "protocol_version"
	ReasonNoSharedCipher = "no_shared_cipher"
	// ReasonClientCert: client auth asked for a certificate that the
	// client did not send or that did not verify.
	ReasonClientCert = "client_certificate"
	ReasonOther      = "other"
)

// TLSMetrics counts handshakes. A nil *TLSMetrics counts nothing.
type TLSMetrics struct {
	handshakes *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	errors     *prometheus.CounterVec

	// Children resolved once, so a handshake does no label lookup.
	done   map[[2]uint16]prometheus.Counter // {version, resumed}
	durObs map[uint16]prometheus.Observer   // resumed 0/1
	errs   map[string]prometheus.Counter    // reason

	conns connMetrics // connection caps (connlimit.go)
}

// NewTLSMetrics creates the handshake collectors and registers them with reg
// if reg is not nil. It returns an error if registration fails, for example
// because another TLSMetrics is registered with reg already.
//
// edgeproxy_tls_handshakes_total{resumed="true"} is the count of completed
// resumptions (edgeproxy_resumption_unwrap_total counts what the session
// layer opened, which crypto/tls may still refuse).
func NewTLSMetrics(reg prometheus.Registerer) (*TLSMetrics, error) {
	m := &TLSMetrics{
		handshakes: promreg.CounterVec("edgeproxy_tls_handshakes_total", "Completed TLS handshakes by version and whether the session was resumed.", "version", "resumed"),
		duration:   promreg.HistogramVec("edgeproxy_tls_handshake_duration_seconds", "Time from accepting the connection to the end of the TLS handshake.", []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}, "resumed"),
		errors:     promreg.CounterVec("edgeproxy_tls_handshake_errors_total", "Failed TLS handshakes by reason.", "reason"),
		done:       map[[2]uint16]prometheus.Counter{},
		durObs:     map[uint16]prometheus.Observer{},
		errs:       map[string]prometheus.Counter{},
	}
	for _, v := range []uint16{0x0303, 0x0304} {
		for r, label := range []string{"false", "true"} {
			m.done[[2]uint16{v, uint16(r)}] = m.handshakes.WithLabelValues(VersionName(v), label)
		}
	}
	m.durObs[0] = m.duration.WithLabelValues("false")
	m.durObs[1] = m.duration.WithLabelValues("true")
	for _, r := range []string{ReasonTimeout, ReasonClientClosed, ReasonBadClientHello, ReasonVersion, ReasonNoSharedCipher, ReasonClientCert, ReasonOther} {
		m.errs[r] = m.errors.WithLabelValues(r)
	}
	m.conns = newConnMetrics()
	if err := promreg.Register(reg, m.handshakes, m.duration, m.errors, m.conns.refused, m.conns.open); err != nil {
		return nil, fmt.Errorf("proxy: registering TLS metrics: %w", err)
	}
	return m, nil
}

func (m *TLSMetrics) handshakeDone(version uint16, resumed bool, seconds float64) {
	if m == nil {
		return
	}
	r := uint16(0)
	if resumed {
		r = 1
	}
	c, ok := m.done[[2]uint16{version, r}]
	if !ok {
		c = m.handshakes.WithLabelValues(VersionName(version), [2]string{"false", "true"}[r])
	}
	c.Inc()
	m.durObs[r].Observe(seconds)
}

func (m *TLSMetrics) handshakeFailed(reason string) {
	if m == nil {
		return
	}
	m.errs[reason].Inc()
}
