package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edgeproxy/edgeproxy/proxy"
)

// defaultHealthTimeout bounds a healthcheck; container runtimes kill a
// check that runs past their own timeout, which says less.
const defaultHealthTimeout = 3 * time.Second

var healthcheckCommand = &command{
	Name:  "healthcheck",
	Short: "exit 0 if an admin URL answers 2xx, 1 otherwise (for a container HEALTHCHECK)",
	Long: `healthcheck sends GET --url and exits 0 on a 2xx answer, 1 otherwise (refused,
timed out, any other status). The image has no curl: its HEALTHCHECK runs this.`,
	Flags: healthcheckFlags,
}

func healthcheckFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	url := fs.String("url", "http://"+proxy.DefaultAdminListen+"/healthz", "URL to GET, usually the admin listener's /healthz or /readyz")
	timeout := fs.Duration("timeout", defaultHealthTimeout, "bound on the whole request")
	return func(args []string) error {
		if len(args) > 0 {
			return errUsage
		}
		if *timeout <= 0 {
			return fmt.Errorf("--timeout must be positive, got %s", *timeout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
		if err != nil {
			return fmt.Errorf("--url %q: %w", *url, err)
		}
		// No proxy from the environment: the check is about this node.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("%s: %s", *url, resp.Status)
		}
		fmt.Fprintf(stdout, "%s: %s\n", *url, resp.Status)
		return nil
	}
}
