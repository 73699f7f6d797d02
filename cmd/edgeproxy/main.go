// Command edgeproxy is a TLS-terminating reverse proxy whose TLS sessions
// resume across a fleet of nodes.
//
//	edgeproxy serve [flags]                   run the proxy
//	edgeproxy config check FILE...            load configuration files as serve would, without listening
//	edgeproxy keys gen|inspect|kek            make and inspect ticket key files and key-encryption keys
//	edgeproxy upstream [--listen ADDR]        run the small demo upstream app
//	edgeproxy demo|bench|probe                see resumption work, measure it, probe a server
//	edgeproxy version [--json]                version, commit and Go version
//	edgeproxy healthcheck [--url URL]         exit 0 if the URL answers 2xx (container HEALTHCHECK)
//	edgeproxy completion bash|zsh|fish        shell completion script
//
// Every command prints its usage on stdout and exits 0 with -h or --help;
// unknown commands and flags exit 2.
package main

import (
	"io"
	"os"
)

func root() *command {
	r := &command{
		Name:  "edgeproxy",
		Short: "edgeproxy terminates TLS in front of HTTP upstreams; TLS sessions resume across the fleet.",
		Sub: []*command{
			serveCommand,
			{Name: "config", Short: "check configuration files", Sub: []*command{configCheckCommand}},
			{Name: "keys", Short: "make and inspect ticket key files", Sub: []*command{keysGenCommand, keysInspectCommand, keysKEKCommand}},
			upstreamCommand,
			demoCommand,
			benchCommand,
			probeCommand,
			versionCommand,
			healthcheckCommand,
			{Name: "completion", Short: "print a shell completion script", Sub: completionCommands()},
		},
	}
	r.Sub = append(r.Sub, completeCommand(r))
	return r
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command line as a function of its arguments and output
// streams; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "--version" {
		args = []string{"version"}
	}
	return dispatch(root(), nil, args, stdout, stderr)
}
