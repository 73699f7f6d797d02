package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demoapp"
)

var upstreamCommand = &command{
	Name:  "upstream",
	Short: "run the small demo upstream application",
	Flags: upstreamFlags,
}

func upstreamFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve plain HTTP on")
	name := fs.String("name", "", "name reported in replies (default: host name)")
	return func(args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected arguments: %q", args)
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "upstream listening on http://%s\n", ln.Addr())
		srv := &http.Server{Handler: demoapp.Handler(*name), ReadHeaderTimeout: 10 * time.Second}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
