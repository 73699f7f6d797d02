package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Tests of the PROXY protocol on the TLS listener (#14). The test itself
// plays the load balancer: it connects from a 127.0.0.x address, writes a
// PROXY header naming a client, then speaks TLS.

// remoteAddrHandler answers with r.RemoteAddr, the address X-Forwarded-For
// and the access log are built from.
func remoteAddrHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) })
}

// startProxied runs a Server with pp (and lim) whose handler answers with
// r.RemoteAddr, and returns its PROXY metrics and address.
func startProxied(t *testing.T, pp ProxyProtocol, lim Limits, log *zap.Logger) (*ProxyProtocolMetrics, *TLSMetrics, *Server) {
	t.Helper()
	m, err := NewProxyProtocolMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tm := mustTLSMetrics(t, prometheus.NewRegistry())
	s := startServer(t, ServerConfig{
		Handler: remoteAddrHandler(), ProxyProtocol: pp, ProxyProtocolMetrics: m, Metrics: tm,
		Limits: lim, Logger: log, Timeouts: Timeouts{Handshake: time.Minute},
	})
	return m, tm, s
}

// header returns a PROXY header of version for a TCP connection from src
// to dst.
func header(version byte, src, dst string) *proxyproto.Header {
	s, _ := net.ResolveTCPAddr("tcp", src)
	d, _ := net.ResolveTCPAddr("tcp", dst)
	return proxyproto.HeaderProxyFromAddrs(version, s, d)
}

// proxiedConn connects from the loopback address from to addr, sends h if
// not nil, and completes a TLS handshake.
func dialProxied(t *testing.T, from, addr string, h *proxyproto.Header) (*tls.Conn, error) {
	t.Helper()
	raw, err := tryDialFrom(t, from, addr)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	if h != nil {
		if _, err := h.WriteTo(raw); err != nil {
			return nil, err
		}
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection from %s was left open, neither served nor refused: %v", from, err)
		}
		return nil, err
	}
	return tc, nil
}

// remoteAddrSeen sends one request on tc and returns the r.RemoteAddr the
// handler saw.
func remoteAddrSeen(t *testing.T, tc *tls.Conn) string {
	t.Helper()
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// wantResult requires edgeproxy_proxy_protocol_total{result} to be want.
func wantResult(t *testing.T, m *ProxyProtocolMetrics, result string, want float64) {
	t.Helper()
	if got := testutil.ToFloat64(m.by[result]); got != want {
		t.Errorf("edgeproxy_proxy_protocol_total{result=%q} = %v, want %v", result, got, want)
	}
}

func TestProxyProtocolTrustedHeaderSetsRemoteAddr(t *testing.T) {
	t.Parallel()
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	for _, tt := range []struct {
		name   string
		h      *proxyproto.Header
		want   string // r.RemoteAddr, or the host of the peer's address
		result string
	}{
		{"v1", header(1, "203.0.113.7:4567", "192.0.2.1:443"), "203.0.113.7:4567", ProxyResultOK},
		{"v2", header(2, "203.0.113.8:5678", "192.0.2.1:443"), "203.0.113.8:5678", ProxyResultOK},
		{"v2 ipv6", header(2, "[2001:db8::9]:6789", "[2001:db8::1]:443"), "[2001:db8::9]:6789", ProxyResultOK},
		{"v2 local", local, "127.0.0.1", ProxyResultLocal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.1"}}, Limits{}, nil)
			tc, err := dialProxied(t, "127.0.0.1", s.Addr().String(), tt.h)
			if err != nil {
				t.Fatalf("handshake after a trusted %s header: %v", tt.name, err)
			}
			got := remoteAddrSeen(t, tc)
			if host, _, _ := net.SplitHostPort(got); got != tt.want && host != tt.want {
				t.Errorf("r.RemoteAddr = %q, want %q", got, tt.want)
			}
			wantResult(t, m, tt.result, 1)
		})
	}
}

func TestProxyProtocolUntrustedSource(t *testing.T) {
	t.Parallel()
	h := header(2, "203.0.113.7:4567", "192.0.2.1:443")
	t.Run("refuse", func(t *testing.T) {
		t.Parallel()
		m, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.2/32"}}, Limits{}, nil)
		if _, err := dialProxied(t, "127.0.0.3", s.Addr().String(), h); err == nil {
			t.Fatal("a PROXY header from an untrusted source was served")
		}
		wantResult(t, m, ProxyResultUntrusted, 1)
		// A client of its own from an untrusted address is served.
		tc, err := dialProxied(t, "127.0.0.3", s.Addr().String(), nil)
		if err != nil {
			t.Fatalf("plain TLS from an untrusted address: %v", err)
		}
		if got := remoteAddrSeen(t, tc); !strings.HasPrefix(got, "127.0.0.3:") {
			t.Errorf("r.RemoteAddr = %q, want 127.0.0.3:port", got)
		}
		wantResult(t, m, ProxyResultUntrusted, 1)
	})
	t.Run("ignore", func(t *testing.T) {
		t.Parallel()
		m, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.2/32"}, Untrusted: ProxyUntrustedIgnore}, Limits{}, nil)
		tc, err := dialProxied(t, "127.0.0.3", s.Addr().String(), h)
		if err != nil {
			t.Fatalf("handshake after an ignored header: %v", err)
		}
		if got := remoteAddrSeen(t, tc); !strings.HasPrefix(got, "127.0.0.3:") {
			t.Errorf("r.RemoteAddr = %q, want the peer's 127.0.0.3:port, not the header's", got)
		}
		wantResult(t, m, ProxyResultUntrusted, 1)
	})
}

func TestProxyProtocolMissingFromTrustedSource(t *testing.T) {
	t.Parallel()
	t.Run("require", func(t *testing.T) {
		t.Parallel()
		m, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.0/8"}}, Limits{}, nil)
		if _, err := dialProxied(t, "127.0.0.4", s.Addr().String(), nil); err == nil {
			t.Fatal("a trusted source without a PROXY header was served under policy require")
		}
		wantResult(t, m, ProxyResultMissing, 1)
	})
	t.Run("optional", func(t *testing.T) {
		t.Parallel()
		m, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.0/8"}, Policy: ProxyPolicyOptional}, Limits{}, nil)
		tc, err := dialProxied(t, "127.0.0.4", s.Addr().String(), nil)
		if err != nil {
			t.Fatalf("a trusted source without a header under policy optional: %v", err)
		}
		if got := remoteAddrSeen(t, tc); !strings.HasPrefix(got, "127.0.0.4:") {
			t.Errorf("r.RemoteAddr = %q, want 127.0.0.4:port", got)
		}
		wantResult(t, m, ProxyResultMissing, 1)
	})
}

func TestProxyProtocolInvalidHeaderRefused(t *testing.T) {
	t.Parallel()
	m, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.1"}}, Limits{}, nil)
	raw := dialFrom(t, "127.0.0.1", s.Addr().String())
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(raw, "PROXY TCP4 not-an-address 192.0.2.1 1 443\r\n")
	mustBeClosed(t, raw)
	wantResult(t, m, ProxyResultInvalid, 1)
}

// The per-IP cap counts the client named by the header, not the load
// balancer, which holds every connection.
func TestProxyProtocolPerIPCapCountsClient(t *testing.T) {
	t.Parallel()
	_, tm, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.1"}}, Limits{MaxConnectionsPerIP: 2}, nil)
	addr := s.Addr().String()
	a := header(2, "203.0.113.7:1000", "192.0.2.1:443")
	for i := range 2 {
		if _, err := dialProxied(t, "127.0.0.1", addr, a); err != nil {
			t.Fatalf("connection %d of client A: %v", i+1, err)
		}
	}
	if _, err := dialProxied(t, "127.0.0.1", addr, a); err == nil {
		t.Fatal("a third connection of client A was served with max_connections_per_ip 2")
	}
	wantRefused(t, tm, RefusedMaxConnectionsPerIP, 1)
	// The balancer holds two connections already; another client's are
	// served all the same.
	for i := range 2 {
		tc, err := dialProxied(t, "127.0.0.1", addr, header(1, "203.0.113.8:2000", "192.0.2.1:443"))
		if err != nil {
			t.Fatalf("connection %d of client B through the balancer: %v", i+1, err)
		}
		if got := remoteAddrSeen(t, tc); got != "203.0.113.8:2000" {
			t.Errorf("r.RemoteAddr = %q, want 203.0.113.8:2000", got)
		}
	}
	wantRefused(t, tm, RefusedMaxConnectionsPerIP, 1)
}

// A failed handshake is logged with the client's address.
func TestProxyProtocolHandshakeFailureLogsClient(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	_, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.1"}}, Limits{}, zap.New(core))
	raw := dialFrom(t, "127.0.0.1", s.Addr().String())
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	header(2, "203.0.113.7:4567", "192.0.2.1:443").WriteTo(raw)
	io.WriteString(raw, "GET / HTTP/1.1\r\n\r\n") // not TLS
	mustBeClosed(t, raw)
	entries := logs.FilterMessage("tls handshake failed").All()
	if len(entries) != 1 {
		t.Fatalf("%d handshake failures logged, want 1", len(entries))
	}
	if got := entries[0].ContextMap()["remote"]; got != "203.0.113.7:4567" {
		t.Errorf("remote = %v, want the client 203.0.113.7:4567", got)
	}
}

// Shutdown does not wait for a trusted connection that sends no header.
func TestProxyProtocolShutdownAbortsHeaderRead(t *testing.T) {
	t.Parallel()
	_, _, s := startProxied(t, ProxyProtocol{Trusted: []string{"127.0.0.1"}}, Limits{}, nil)
	silent := dialFrom(t, "127.0.0.1", s.Addr().String())
	// The server reads the header only once the connection is admitted;
	// a handshake that completes on a second connection shows it was.
	if _, err := dialProxied(t, "127.0.0.1", s.Addr().String(), header(2, "203.0.113.7:1", "192.0.2.1:443")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // the handshake timeout is a minute
		t.Fatal("Shutdown waited for a silent connection's PROXY header")
	}
	mustBeClosed(t, silent)
}

func TestProxyProtocolValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		p    ProxyProtocol
		want string // "" for valid
	}{
		{"off", ProxyProtocol{}, ""},
		{"cidrs and addresses", ProxyProtocol{Trusted: []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "::ffff:10.0.0.0/104"}}, ""},
		{"all options", ProxyProtocol{Trusted: []string{"10.0.0.0/8"}, Policy: "optional", Untrusted: "ignore"}, ""},
		{"bad cidr", ProxyProtocol{Trusted: []string{"10.0.0.0/8", "10.0.0.0/33"}}, `proxy_protocol.trusted[1]: "10.0.0.0/33"`},
		{"host name", ProxyProtocol{Trusted: []string{"lb.example"}}, `proxy_protocol.trusted[0]: "lb.example": must be a CIDR network or an IP address`},
		{"policy", ProxyProtocol{Trusted: []string{"10.0.0.1"}, Policy: "maybe"}, `proxy_protocol.policy: "maybe": must be require or optional`},
		{"untrusted", ProxyProtocol{Trusted: []string{"10.0.0.1"}, Untrusted: "drop"}, `proxy_protocol.untrusted: "drop": must be refuse or ignore`},
		{"options without trusted", ProxyProtocol{Policy: "require"}, `proxy_protocol.trusted: required`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestProxyProtocolTrustsMappedAndPlainIPv4(t *testing.T) {
	t.Parallel()
	pp, err := ProxyProtocol{Trusted: []string{"::ffff:10.0.0.0/104", "192.0.2.7"}}.parse()
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"10.1.2.3": true, "192.0.2.7": true, "192.0.2.8": false, "11.0.0.1": false} {
		if got := pp.isTrusted(addrIP(&net.TCPAddr{IP: net.ParseIP(ip)})); got != want {
			t.Errorf("isTrusted(%s) = %v, want %v", ip, got, want)
		}
	}
}

// startProxyProtocolUpstream runs an HTTP upstream that requires a PROXY
// header and answers with the client address it named, or "local:<peer>"
// for a LOCAL header.
func startProxyProtocolUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, ReadHeaderTimeout: 10 * time.Second}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	})}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func TestSendProxyProtocolToUpstream(t *testing.T) {
	t.Parallel()
	for _, version := range []string{SendProxyV1, SendProxyV2} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			up := startProxyProtocolUpstream(t)
			h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{up}, SendProxyProtocol: version}}})
			s := startServer(t, ServerConfig{Handler: h})
			// Two clients in turn, each on a connection it keeps: the
			// upstream sees each one, never the other's connection.
			for _, from := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.2"} {
				tc, err := dialProxied(t, from, s.Addr().String(), nil)
				if err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if got := remoteAddrSeen(t, tc); !strings.HasPrefix(got, from+":") || got != tc.LocalAddr().String() {
						t.Errorf("upstream saw %q, want the client %s", got, tc.LocalAddr())
					}
				}
			}
		})
	}
}

func TestSendProxyProtocolHealthCheckIsLocal(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer client.Close()
	go func() { writeProxyHeader(context.Background(), server, SendProxyV2); server.Close() }()
	h, err := proxyproto.Read(bufio.NewReader(client))
	if err != nil {
		t.Fatal(err)
	}
	if !h.Command.IsLocal() {
		t.Errorf("header without a client: command %#x, want LOCAL", byte(h.Command))
	}
}

func TestSendProxyProtocolValidate(t *testing.T) {
	t.Parallel()
	err := ValidateRoutes([]RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}, SendProxyProtocol: "v3"}})
	if want := `routes[0].send_proxy_protocol: "v3": must be v1 or v2`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("ValidateRoutes = %v, want %q", err, want)
	}
}

// TestProxyProtocolConnSessionReachesRequests: behind a PROXY header, the
// ConnSession of ServerConfig.PerConn still reaches the connection's
// requests (it travels on the connection under the PROXY reader).
func TestProxyProtocolConnSessionReachesRequests(t *testing.T) {
	t.Parallel()
	s := startServer(t, ServerConfig{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v := ConnSessionFrom(r.Context()); v != nil {
				io.WriteString(w, v.SessionID())
			}
		}),
		ProxyProtocol: ProxyProtocol{Trusted: []string{"127.0.0.1"}},
		PerConn:       func(base *tls.Config) (*tls.Config, ConnSession) { return base, &tag{n: 7} },
	})
	tc, err := dialProxied(t, "127.0.0.1", s.Addr().String(), header(2, "203.0.113.7:4567", "192.0.2.1:443"))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if got := remoteAddrSeen(t, tc); got != "7" {
		t.Fatalf("handler saw session %q, want \"7\"", got)
	}
}
