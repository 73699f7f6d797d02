package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

var configCheckCommand = &command{
	Name:  "check",
	Args:  "FILE...",
	Short: "load configuration files as serve would, without listening",
	Long: `check loads each file as serve would, without listening or reaching any
server: it validates every field and reads the certificate/key pairs (and
checks that each key matches its certificate), ticket key files (size,
permissions), the key-encryption key and Redis password files the file names.
Every problem is printed, one a line, as FILE: FIELD: PROBLEM. Exit status 1
if any file has a problem (like nginx -t or caddy validate).`,
	Flags:        configCheckFlags,
	Interspersed: true,
}

func configCheckFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	return func(args []string) error {
		if len(args) == 0 {
			return errUsage
		}
		bad := 0
		for _, path := range args {
			if _, err := config.Check(path); err != nil {
				bad++
				for _, line := range strings.Split(strings.TrimPrefix(err.Error(), path+": "), "\n") {
					fmt.Fprintf(stderr, "%s: %s\n", path, line)
				}
				continue
			}
			fmt.Fprintf(stdout, "%s: ok\n", path)
		}
		if bad > 0 {
			return fmt.Errorf("%d of %d file(s) have problems", bad, len(args))
		}
		return nil
	}
}
