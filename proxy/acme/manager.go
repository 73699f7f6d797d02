package acme

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/sessioncache/redis/certstore"
)

// ALPNProtocol is the ALPN protocol of TLS-ALPN-01 validation handshakes
// (RFC 8737). The TLS listener must offer it and must not hand such a
// connection to the HTTP server.
const ALPNProtocol = acmez.ACMETLS1Protocol

// DefaultAskTimeout bounds a call to OnDemand.Ask.
const DefaultAskTimeout = 5 * time.Second

// ScopePrefix starts the resumption scope of every ACME-served name: each
// name is its own certificate group, "acme:" + name.
const ScopePrefix = "acme:"

// Options configures New.
type Options struct {
	// Config is the validated tls.acme section.
	Config Config
	// TLSAddr is the node's TLS listen address (host:port). TLS-ALPN-01 is
	// answered there, and plain-HTTP requests redirect to its port.
	// Required; its port must not be 0.
	TLSAddr string
	// Registerer receives the metrics. If nil, they are not registered.
	Registerer prometheus.Registerer
	// Logger receives certmagic's and the manager's logs. If nil, none.
	Logger *zap.Logger
	// AskClient calls OnDemand.Ask. If nil, a client with
	// DefaultAskTimeout.
	AskClient *http.Client
	// RenewCheckInterval is how often certificates are checked for
	// renewal. If zero, certmagic's default (10 minutes).
	RenewCheckInterval time.Duration
}

// Manager obtains, renews and serves ACME certificates. Build it with New,
// call Start once the TLS listener listens, and Stop at shutdown. Its
// methods are safe for concurrent use.
type Manager struct {
	hosts    map[string]bool // lower-case configured hosts
	allow    []string        // on-demand allow-list, lower case
	ask      string
	askHTTP  *http.Client
	tlsPort  string
	httpAddr string
	log      *zap.Logger

	cache    *certmagic.Cache
	managed  *certmagic.Config // Hosts, obtained at Start
	onDemand *certmagic.Config // nil without OnDemand
	issuer   *certmagic.ACMEIssuer
	storage  certmagic.Storage
	closer   func() error // closes storage's connections, or nil
	metrics  *metrics

	// mu protects cancel, httpSrv and httpLn, which Start sets.
	mu      sync.Mutex
	cancel  context.CancelFunc
	httpSrv *http.Server
	httpLn  net.Listener

	// signalsMu protects signals: per event kind and name, a channel
	// closed once that happened (see WaitCertificate, WaitFailure).
	signalsMu sync.Mutex
	signals   map[signalKey]chan struct{}
}

// New builds a Manager without contacting the CA or listening.
func New(o Options) (*Manager, error) {
	c := o.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	_, port, err := net.SplitHostPort(o.TLSAddr)
	if err != nil || port == "" || port == "0" {
		return nil, fmt.Errorf("acme: TLS address %q: TLS-ALPN-01 needs a fixed host:port", o.TLSAddr)
	}
	log := cmp.Or(o.Logger, zap.NewNop()).Named("acme")
	m := &Manager{
		hosts: map[string]bool{}, signals: map[signalKey]chan struct{}{}, tlsPort: port, httpAddr: c.HTTPListen, log: log,
		askHTTP: cmp.Or(o.AskClient, &http.Client{Timeout: DefaultAskTimeout}),
	}
	for _, h := range c.Hosts {
		m.hosts[strings.ToLower(h)] = true
	}
	if od := c.OnDemand; od != nil {
		for _, p := range od.Allow {
			m.allow = append(m.allow, strings.ToLower(p))
		}
		m.ask = od.Ask
	}
	if m.metrics, err = newMetrics(o.Registerer, m); err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if c.CARoot != "" {
		pem, err := os.ReadFile(c.CARoot)
		if err != nil {
			return nil, fmt.Errorf("reading acme.ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme.ca_root: %q holds no PEM certificate", c.CARoot)
		}
	}
	switch {
	case c.Storage.Redis != nil:
		rc := *c.Storage.Redis
		rc.Logger = log
		st, err := certstore.New(rc)
		if err != nil {
			return nil, err
		}
		m.storage, m.closer = st, st.Close
	case c.Storage.File != "":
		m.storage = &certmagic.FileStorage{Path: c.Storage.File}
	}

	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(cert certmagic.Certificate) (*certmagic.Config, error) {
			return m.configFor(cert.Names), nil
		},
		RenewCheckInterval: o.RenewCheckInterval,
		Logger:             log,
	})
	tlsHost, _, _ := net.SplitHostPort(o.TLSAddr)
	httpHost, httpPort, _ := net.SplitHostPort(c.HTTPListen)
	tlsALPN, http01 := c.challenges()
	newConfig := func(od *certmagic.OnDemandConfig) (*certmagic.Config, *certmagic.ACMEIssuer) {
		cfg := certmagic.New(m.cache, certmagic.Config{
			Storage:  m.storage,
			OnDemand: od,
			OnEvent:  m.onEvent,
			Logger:   log,
		})
		iss := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
			CA:                      c.ca(),
			Email:                   c.Email,
			Agreed:                  true,
			TrustedRoots:            roots,
			DisableTLSALPNChallenge: !tlsALPN,
			DisableHTTPChallenge:    !http01,
			// certmagic tries to bind these; finding our listeners
			// there, it leaves the challenges to them.
			ListenHost:     cmp.Or(tlsHost, httpHost),
			AltTLSALPNPort: atoi(port),
			AltHTTPPort:    atoi(httpPort),
			Logger:         log,
		})
		if http01 && tlsALPN && tlsHost != httpHost {
			// ListenHost serves both challenges; when the listeners
			// differ in host, certmagic finds each busy only by dialing.
			iss.ListenHost = ""
		}
		cfg.Issuers = []certmagic.Issuer{iss}
		return cfg, iss
	}
	m.managed, m.issuer = newConfig(nil)
	if c.OnDemand != nil {
		m.onDemand, _ = newConfig(&certmagic.OnDemandConfig{DecisionFunc: m.decide})
	}
	return m, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// configFor returns the certmagic config that manages a certificate for
// names: the eager one for configured hosts, else the on-demand one.
func (m *Manager) configFor(names []string) *certmagic.Config {
	for _, n := range names {
		if m.hosts[strings.ToLower(n)] {
			return m.managed
		}
	}
	if m.onDemand != nil {
		return m.onDemand
	}
	return m.managed
}

// allowed reports whether name matches the on-demand allow-list.
func (m *Manager) allowed(name string) bool {
	for _, p := range m.allow {
		if p == name {
			return true
		}
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			if i := strings.IndexByte(name, '.'); i > 0 && name[i+1:] == suffix {
				return true
			}
		}
	}
	return false
}

// Manages reports whether the Manager answers for serverName (lower case):
// a configured host, or a name on-demand issuance may allow (with an Ask
// URL, any name: Ask decides during the handshake).
func (m *Manager) Manages(serverName string) bool {
	if m.hosts[serverName] {
		return true
	}
	if m.onDemand == nil {
		return false
	}
	if len(m.allow) > 0 {
		return m.allowed(serverName)
	}
	return m.ask != ""
}

// Scope returns the resumption scope of an ACME-served name.
func (m *Manager) Scope(serverName string) string { return ScopePrefix + serverName }

// GetCertificate is a tls.Config.GetCertificate hook for the names the
// Manager answers for, and for TLS-ALPN-01 validation handshakes. A name
// without a certificate (not yet obtained, or refused on demand) gets an
// error, which crypto/tls turns into an alert.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(hello.ServerName)
	if m.hosts[name] || m.onDemand == nil {
		return m.managed.GetCertificate(hello)
	}
	return m.onDemand.GetCertificate(hello)
}

// decide is the on-demand DecisionFunc: name must match the allow-list if
// there is one, and Ask must answer 200 if it is set.
func (m *Manager) decide(ctx context.Context, name string) error {
	name = strings.ToLower(name)
	if len(m.allow) > 0 && !m.allowed(name) {
		m.log.Info("on-demand certificate refused", zap.String("host", name), zap.String("reason", "not in allow list"))
		return fmt.Errorf("acme: %q is not in acme.on_demand.allow", name)
	}
	if m.ask == "" {
		return nil
	}
	u, err := url.Parse(m.ask)
	if err != nil {
		return fmt.Errorf("acme: on_demand.ask: %w", err)
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("acme: on_demand.ask: %w", err)
	}
	resp, err := m.askHTTP.Do(req)
	if err != nil {
		m.log.Warn("on-demand ask failed", zap.String("host", name), zap.Error(err))
		return fmt.Errorf("acme: asking whether to get a certificate for %q: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		m.log.Info("on-demand certificate refused", zap.String("host", name), zap.String("reason", "ask answered "+resp.Status))
		return fmt.Errorf("acme: ask answered %s for %q", resp.Status, name)
	}
	return nil
}

// onEvent counts and logs certmagic's obtain and renew outcomes.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	host, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	action := "obtain"
	if renewal {
		action = "renew"
	}
	switch event {
	case "cert_obtained":
		m.metrics.outcome(host, action, "success")
		m.log.Info("certificate obtained", zap.String("host", host), zap.String("action", action))
	case "cert_failed":
		m.metrics.outcome(host, action, "failure")
		err, _ := data["error"].(error)
		// The error carries the CA's problem document (type, detail),
		// e.g. a rate limit or the reason a challenge failed.
		m.log.Error("certificate not obtained", zap.String("host", host), zap.String("action", action), zap.Error(err))
		m.signal(signalFailed, host)
	case "cached_managed_cert":
		if sans, ok := data["sans"].([]string); ok {
			m.metrics.seen(sans)
			for _, n := range sans {
				m.signal(signalCached, n)
			}
		}
	}
	return nil
}

type signalKey struct {
	kind int
	name string
}

const (
	signalCached = iota // a certificate entered the cache
	signalFailed        // an obtain or renew attempt failed
)

// signalChan returns the channel of (kind, name); m.signalsMu must be held.
func (m *Manager) signalChan(kind int, name string) chan struct{} {
	k := signalKey{kind, strings.ToLower(name)}
	ch := m.signals[k]
	if ch == nil {
		ch = make(chan struct{})
		m.signals[k] = ch
	}
	return ch
}

func (m *Manager) signal(kind int, name string) {
	m.signalsMu.Lock()
	defer m.signalsMu.Unlock()
	ch := m.signalChan(kind, name)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (m *Manager) wait(ctx context.Context, kind int, name string) error {
	m.signalsMu.Lock()
	ch := m.signalChan(kind, name)
	m.signalsMu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitCertificate waits until a certificate for name is in the Manager's
// cache, obtained or loaded from storage, or ctx ends.
func (m *Manager) WaitCertificate(ctx context.Context, name string) error {
	if len(m.cache.AllMatchingCertificates(strings.ToLower(name))) > 0 {
		return nil
	}
	if err := m.wait(ctx, signalCached, name); err != nil {
		return fmt.Errorf("acme: waiting for a certificate for %q: %w", name, err)
	}
	return nil
}

// WaitFailure waits until an attempt to obtain or renew name's certificate
// failed (since the Manager started), or ctx ends.
func (m *Manager) WaitFailure(ctx context.Context, name string) error {
	if err := m.wait(ctx, signalFailed, name); err != nil {
		return fmt.Errorf("acme: waiting for a failed attempt for %q: %w", name, err)
	}
	return nil
}

// Start starts the plain-HTTP listener (if configured) and begins
// obtaining or loading the configured hosts' certificates in the
// background: call it once the TLS listener listens, so that certmagic
// finds the TLS-ALPN-01 port taken and leaves the challenge to it.
func (m *Manager) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		return errors.New("acme: already started")
	}
	if m.httpAddr != "" {
		ln, err := net.Listen("tcp", m.httpAddr)
		if err != nil {
			return fmt.Errorf("acme.http_listen: %w", err)
		}
		m.httpLn = ln
		m.httpSrv = &http.Server{
			Handler:           m.issuer.HTTPChallengeHandler(http.HandlerFunc(m.redirect)),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(m.log),
		}
		go m.httpSrv.Serve(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	hosts := make([]string, 0, len(m.hosts))
	for h := range m.hosts {
		hosts = append(hosts, h)
	}
	if len(hosts) > 0 {
		if err := m.managed.ManageAsync(ctx, hosts); err != nil {
			return fmt.Errorf("acme: managing %v: %w", hosts, err)
		}
	}
	return nil
}

// redirect sends plain-HTTP requests to https on the TLS port.
func (m *Manager) redirect(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if m.tlsPort != "443" {
		host = net.JoinHostPort(host, m.tlsPort)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Connection", "close")
	}
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
}

// HTTPAddr returns the plain-HTTP listener's address, or nil.
func (m *Manager) HTTPAddr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.httpLn == nil {
		return nil
	}
	return m.httpLn.Addr()
}

// Stop stops obtaining and renewing, closes the plain-HTTP listener and
// the storage's connections. Locks it held expire.
func (m *Manager) Stop() {
	m.mu.Lock()
	if m.cancel != nil {
		m.cancel()
	}
	srv := m.httpSrv
	m.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	m.cache.Stop()
	if m.closer != nil {
		if err := m.closer(); err != nil {
			m.log.Warn("closing certificate storage", zap.Error(err))
		}
	}
}
