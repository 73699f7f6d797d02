package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/app"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy"
)

var serveCommand = &command{
	Name:  "serve",
	Short: "run the proxy",
	Long: `serve runs the proxy. Without --config and --upstream it serves a built-in
demo app behind an in-memory self-signed certificate. Flags override the file,
also at every reload (SIGHUP). SIGTERM and SIGINT drain for shutdown_timeout.`,
	Flags: serveFlags,
}

func serveFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	var (
		configPath = fs.String("config", "", "YAML configuration file (flags override it)")
		listen     = fs.String("listen", config.DefaultListen, "TLS listen address")
		upstream   = fs.String("upstream", "", "upstream URL(s), comma-separated, for one catch-all route (default: a built-in demo app)")
		cert       = fs.String("cert", "", "certificate PEM file (default: in-memory self-signed for localhost)")
		key        = fs.String("key", "", "private key PEM file for --cert")
		admin      = fs.String("admin", proxy.DefaultAdminListen, `admin listener for /metrics, /healthz, /readyz ("" turns it off)`)
		minTLS     = fs.String("min-tls", "1.2", "minimum TLS version: 1.2 or 1.3")
		mode       = fs.String("resumption", config.DefaultMode, "resumption mode: tickets, redis, memcached, sticky, off")
		ticketKeys = fs.String("ticket-keys", "", "ticket key file(s), comma-separated, shared by the fleet (nginx/HAProxy 48- or 80-byte format)")
		redisAddrs = fs.String("redis", "", "Redis address(es), comma-separated, for --resumption redis (several: Cluster)")
		memcached  = fs.String("memcached", "", "memcached server(s), comma-separated, for --resumption memcached")
		lifetime   = fs.Duration("session-lifetime", 0, "how long a session resumes (default 12h, at most 168h)")
		dev        = fs.Bool("dev", false, "human-readable console logs at debug level")
		logLevel   = fs.String("log-level", "", "debug, info, warn or error")
		pprof      = fs.Bool("pprof", false, "serve /debug/pprof on the admin listener")
		adminToken = fs.String("admin-token-file", "", "file holding the bearer token the admin listener's pprof and DELETE /sessions/{id} require (mode 0600)")
		adminHosts = fs.String("admin-hosts", "", "names, comma-separated, the admin listener accepts in a Host header besides IP literals and localhost")
	)
	acmeOverrides := acmeFlags(fs)
	return func(args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected arguments: %q", args)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["cert"] != set["key"] {
			return fmt.Errorf("--cert and --key go together")
		}

		// overrides applies the flags that were given on top of a loaded file,
		// at start and at every reload.
		overrides := func(c *config.Config) {
			if set["listen"] || c.Listen == "" {
				c.Listen = *listen
			}
			if set["upstream"] {
				c.Routes = []proxy.RouteConfig{{Upstreams: splitList(*upstream)}}
			}
			if set["cert"] {
				c.TLS.Certificates = []proxy.CertConfig{{Cert: *cert, Key: *key}}
			}
			if set["admin"] {
				c.Admin = admin
			}
			if set["min-tls"] {
				c.TLS.MinVersion = *minTLS
			}
			if set["resumption"] {
				c.Resumption.Mode = *mode
			}
			if set["ticket-keys"] {
				c.Resumption.TicketKeys.Source = "file"
				c.Resumption.TicketKeys.Files = splitList(*ticketKeys)
			}
			if set["redis"] {
				c.Resumption.Redis.Addrs = splitList(*redisAddrs)
				if !set["resumption"] {
					c.Resumption.Mode = "redis"
				}
			}
			if set["memcached"] {
				c.Resumption.Memcached.Servers = splitList(*memcached)
				if !set["resumption"] {
					c.Resumption.Mode = "memcached"
				}
			}
			if set["session-lifetime"] {
				c.Resumption.SessionLifetime = *lifetime
			}
			if set["log-level"] {
				c.Log.Level = *logLevel
			}
			if *dev {
				c.Log.Format = "console"
				if c.Log.Level == "" {
					c.Log.Level = "debug"
				}
			}
			if set["pprof"] {
				c.Pprof = *pprof
			}
			if set["admin-token-file"] {
				c.AdminTokenFile = *adminToken
			}
			if set["admin-hosts"] {
				c.AdminHosts = splitList(*adminHosts)
			}
			acmeOverrides(c, set)
		}

		opts := app.Options{ConfigPath: *configPath, Overrides: overrides}
		if *configPath == "" && !set["upstream"] {
			opts.BuiltinUpstream = true
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return app.Run(ctx, opts, stdout)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
