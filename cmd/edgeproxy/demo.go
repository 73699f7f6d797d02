package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/app"
	"github.com/edgeproxy/edgeproxy/internal/bench"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/proxy"
)

var demoCommand = &command{
	Name:  "demo",
	Short: "an upstream, 3 nodes sharing resumption and a benchmark, on loopback",
	Long:  "demo runs an upstream, proxy nodes sharing resumption and a short benchmark, all on loopback.",
	Flags: demoFlags,
}

func demoFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	var (
		mode       = fs.String("mode", demo.DefaultMode, "resumption of the nodes: tickets, sticky, off, redis (with --redis) or memcached (with --memcached)")
		redis      = fs.String("redis", "", "Redis address for --mode redis")
		memcached  = fs.String("memcached", "", "memcached address for --mode memcached")
		nodes      = fs.Int("nodes", demo.DefaultNodes, "proxy nodes")
		version    = fs.String("tls", "1.3", "TLS version of the benchmark: 1.2 or 1.3")
		benchTime  = fs.Duration("bench-time", demo.DefaultBenchDuration, "how long each benchmark mode (full, resume) runs")
		benchConns = fs.Int("bench-conns", 0, "connections per benchmark mode, instead of --bench-time")
		conc       = fs.Int("concurrency", bench.DefaultConcurrency, "benchmark workers")
		duration   = fs.Duration("duration", 0, "how long to keep serving after the benchmark (default: until Ctrl-C)")
		admin      = fs.Bool("admin", true, "start each node's admin listener (/metrics) on a free loopback port")
		verbose    = fs.Bool("verbose", false, "print the nodes' logs on standard error")
	)
	return func(args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected arguments: %q", args)
		}
		v, err := proxy.ParseTLSVersion(*version)
		if err != nil {
			return fmt.Errorf("--tls %w", err)
		}
		logger := zap.NewNop()
		if *verbose {
			if logger, err = app.NewLogger(config.Log{Format: "console", Level: "info"}); err != nil {
				return err
			}
		}
		opts := demo.Options{
			FleetOptions: demo.FleetOptions{Mode: *mode, Redis: *redis, Memcached: *memcached, Nodes: *nodes, Admin: *admin, Logger: logger},
			TLSVersion:   v, BenchDuration: *benchTime, BenchConns: *benchConns, Concurrency: *conc, Serve: *duration,
			Progress: stderr, ProgressTTY: bench.IsTerminal(stderr),
		}
		if *benchConns > 0 {
			opts.BenchDuration = 0
		}
		if err := opts.Validate(); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		_, err = demo.Run(ctx, opts, stdout)
		return err
	}
}
