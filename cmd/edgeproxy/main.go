// Command edgeproxy is a TLS-terminating reverse proxy whose TLS sessions
// resume across a fleet of nodes.
//
//	edgeproxy serve [--config FILE] [flags]   run the proxy
//	edgeproxy config check FILE               validate a configuration file
//	edgeproxy keys gen|inspect                make and inspect ticket key files
//	edgeproxy upstream [--listen ADDR]        run the small demo upstream app
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the proxy", runServe},
		{"config", "config check FILE: validate a configuration file", runConfig},
		{"keys", "keys gen|inspect: make and inspect ticket key files", runKeys},
		{"upstream", "run the small demo upstream application", runUpstream},
		{"demo", "an upstream, 3 nodes sharing resumption and a benchmark, on loopback", runDemo},
		{"bench", "full vs resumed TLS handshakes against one or several targets", runBench},
		{"probe", "probe HOST:PORT: what a server does with tickets, session IDs, resumption", runProbe},
	}
}

// errUsage means the command printed its usage; exit 2 without more text.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		return 2
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
				return 2
			}
			fmt.Fprintf(stderr, "edgeproxy %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "edgeproxy: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: edgeproxy COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'edgeproxy COMMAND -h' for a command's flags")
}
