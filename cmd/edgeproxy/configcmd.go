package main

import (
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

func runConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: edgeproxy config check FILE")
		return errUsage
	}
	if _, err := config.Load(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[1])
	return nil
}
