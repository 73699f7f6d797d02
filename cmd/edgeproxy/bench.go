package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/bench"
	"github.com/edgeproxy/edgeproxy/proxy"
)

var benchCommand = &command{
	Name:  "bench",
	Short: "full vs resumed TLS handshakes against one or several targets",
	Long:  "bench measures full vs resumed TLS handshakes, round robin over the targets (--targets is required).",
	Flags: benchFlags,
}

func benchFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	var (
		targets  = fs.String("targets", "", "host:port[,host:port...] to connect to in round robin (required)")
		mode     = fs.String("mode", "both", "full (every connection a new client), resume (clients come back with their session), both, or first (new clients that accept a session, then drop it: what a resumption saves)")
		version  = fs.String("tls", "1.3", "TLS version: 1.2 or 1.3")
		conc     = fs.Int("concurrency", bench.DefaultConcurrency, "workers, each with one connection at a time")
		duration = fs.Duration("duration", bench.DefaultDuration, "how long each mode runs, unless --conns is given")
		conns    = fs.Int("conns", 0, "connections per mode, instead of --duration")
		sni      = fs.String("sni", "", "server name to send and verify (default: each target's host)")
		insecure = fs.Bool("insecure", false, "skip certificate verification (self-signed servers such as edgeproxy demo)")
		httpGet  = fs.Bool("http", false, "send one GET / on each connection after the handshake and read the response")
		jsonOut  = fs.Bool("json", false, "print JSON instead of a table")
		chart    = fs.String("chart", "", "write an SVG chart of the results to this file")
		timeout  = fs.Duration("timeout", bench.DefaultTimeout, "bound on each connection")
		quiet    = fs.Bool("quiet", false, "no progress display on standard error")
	)
	return func(args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected arguments %q: targets go in --targets", args)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["duration"] && set["conns"] {
			return errors.New("--duration and --conns exclude each other")
		}
		var modes []string
		switch *mode {
		case "both":
			modes = []string{bench.ModeFull, bench.ModeResume}
		case bench.ModeFull, bench.ModeResume, bench.ModeFirst:
			modes = []string{*mode}
		default:
			return fmt.Errorf("--mode %q: must be full, resume, both or first", *mode)
		}
		v, err := proxy.ParseTLSVersion(*version)
		if err != nil {
			return fmt.Errorf("--tls %w", err)
		}
		cfg := bench.Config{
			Targets: splitList(*targets), TLSVersion: v, Concurrency: *conc, Conns: *conns, Duration: *duration,
			ServerName: *sni, Insecure: *insecure, HTTP: *httpGet, Timeout: *timeout,
		}
		if *conns > 0 {
			cfg.Duration = 0
		}
		if len(cfg.Targets) == 0 {
			return errors.New("--targets is required")
		}
		if err := cfg.Validate(); err != nil {
			return err
		}

		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		tty := bench.IsTerminal(stderr)
		var results []*bench.Result
		var runErr error
		for _, m := range modes {
			c := cfg
			c.Mode = m
			if !*quiet {
				p := &bench.ProgressWriter{W: stderr, TTY: tty, Label: m}
				c.Progress = p.Update
			}
			r, err := bench.Run(ctx, c)
			if r != nil {
				results = append(results, r)
			}
			if err != nil {
				runErr = err
				break
			}
		}
		if len(results) > 0 {
			write := bench.WriteText
			if *jsonOut {
				write = bench.WriteJSON
			}
			if err := write(stdout, results...); err != nil {
				return err
			}
			if *chart != "" {
				if err := writeChart(*chart, results); err != nil {
					return err
				}
				if !*jsonOut {
					fmt.Fprintf(stdout, "chart: %s\n", *chart)
				}
			}
		}
		if errors.Is(runErr, context.Canceled) {
			return errors.New("interrupted: results cover what ran")
		}
		return runErr
	}
}

func writeChart(path string, results []*bench.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing chart: %w", err)
	}
	if err := bench.WriteSVG(f, results...); err != nil {
		f.Close()
		return fmt.Errorf("writing chart: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing chart: %w", err)
	}
	return nil
}
