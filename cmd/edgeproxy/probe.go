package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/probe"
	"github.com/edgeproxy/edgeproxy/proxy"
)

var probeCommand = &command{
	Name:         "probe",
	Args:         "HOST:PORT",
	Short:        "what a server does with tickets, session IDs, resumption",
	Long:         "probe reports what a TLS server does with session tickets, session IDs and resumption.",
	Flags:        probeFlags,
	Interspersed: true,
}

func probeFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	var (
		sni        = fs.String("sni", "", "server name to send (default: the host, unless it is an IP address)")
		version    = fs.String("tls", "", "probe only this TLS version: 1.2 or 1.3 (default: both)")
		reconnects = fs.Int("reconnects", probe.DefaultReconnects, "reconnects after the first connection, each offering the latest session")
		jsonOut    = fs.Bool("json", false, "print JSON")
		noOpenSSL  = fs.Bool("no-openssl", false, "do not run openssl for the lifetime hint and the session-ID test")
		timeout    = fs.Duration("timeout", probe.DefaultTimeout, "bound on each connection")
	)
	return func(args []string) error {
		if len(args) != 1 {
			return errUsage
		}
		cfg := probe.Config{Addr: args[0], ServerName: *sni, Reconnects: *reconnects, NoOpenSSL: *noOpenSSL, Timeout: *timeout}
		if *reconnects <= 0 {
			return fmt.Errorf("--reconnects must be positive, got %d", *reconnects)
		}
		if *version != "" {
			v, err := proxy.ParseTLSVersion(*version)
			if err != nil {
				return fmt.Errorf("--tls %w", err)
			}
			cfg.Versions = []uint16{v}
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		rep, err := probe.Run(ctx, cfg)
		if err != nil {
			return err
		}
		if *jsonOut {
			err = probe.WriteJSON(stdout, rep)
		} else {
			err = probe.WriteText(stdout, rep)
		}
		if err != nil {
			return err
		}
		for _, v := range rep.Versions {
			if v.Supported {
				return nil
			}
		}
		return errors.New("no TLS handshake succeeded")
	}
}
