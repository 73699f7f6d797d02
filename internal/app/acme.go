package app

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy/acme"
)

// buildACME builds the ACME manager when tls.acme is set and plugs it into
// a.certs, which stays the node's one certificate selector (and so the
// resumption scope). It neither listens nor contacts the CA: startACME does.
func (a *App) buildACME(cfg *config.Config) error {
	if cfg.TLS.ACME == nil {
		return nil
	}
	m, err := acme.New(acme.Options{
		Config:     *cfg.TLS.ACME,
		TLSAddr:    cfg.Listen,
		Registerer: a.reg,
		Logger:     a.log,
	})
	if err != nil {
		return err
	}
	a.acme = m
	a.certs.SetManaged(m)
	return nil
}

// withACME offers the TLS-ALPN-01 protocol on the node's tls.Config.
func (a *App) withACME(c *tls.Config) *tls.Config {
	if a.acme != nil && !slices.Contains(c.NextProtos, acme.ALPNProtocol) {
		c.NextProtos = append(c.NextProtos, acme.ALPNProtocol)
	}
	return c
}

func (a *App) startACME() error {
	if a.acme == nil {
		return nil
	}
	return a.acme.Start()
}

func (a *App) stopACME() {
	if a.acme != nil {
		a.acme.Stop()
	}
}

// ACMEHTTPAddr returns the ACME plain-HTTP listener's address, or nil.
func (a *App) ACMEHTTPAddr() net.Addr {
	if a.acme == nil {
		return nil
	}
	return a.acme.HTTPAddr()
}

// WaitCertificate waits until the node holds an ACME certificate for name.
func (a *App) WaitCertificate(ctx context.Context, name string) error {
	if a.acme == nil {
		return errors.New("tls.acme is not configured")
	}
	return a.acme.WaitCertificate(ctx, name)
}
