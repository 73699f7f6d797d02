package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/probe"
)

func runProbe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edgeproxy probe HOST:PORT [flags]\n\nwhat a TLS server does with session tickets, session IDs and resumption\n\nflags:")
		fs.PrintDefaults()
	}
	var (
		sni        = fs.String("sni", "", "server name to send (default: the host, unless it is an IP address)")
		version    = fs.String("tls", "", "probe only this TLS version: 1.2 or 1.3 (default: both)")
		reconnects = fs.Int("reconnects", probe.DefaultReconnects, "reconnects after the first connection, each offering the latest session")
		jsonOut    = fs.Bool("json", false, "print JSON")
		noOpenSSL  = fs.Bool("no-openssl", false, "do not run openssl for the lifetime hint and the session-ID test")
		timeout    = fs.Duration("timeout", probe.DefaultTimeout, "bound on each connection")
	)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	cfg := probe.Config{Addr: pos[0], ServerName: *sni, Reconnects: *reconnects, NoOpenSSL: *noOpenSSL, Timeout: *timeout}
	if *reconnects <= 0 {
		return fmt.Errorf("--reconnects must be positive, got %d", *reconnects)
	}
	if *version != "" {
		v, err := probe.ParseVersion(*version)
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

// parseInterspersed parses flags that may come before or after positional
// arguments ("probe HOST:PORT --json") and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" || strings.HasPrefix(rest[0], "-") && rest[0] != "-" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
