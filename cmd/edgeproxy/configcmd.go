package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

var configCheckCommand = &command{
	Name:  "check",
	Args:  "FILE...",
	Short: "load configuration files as serve would, without listening",
	Long: `check loads each file as serve would, without listening: it validates every
field and reads the certificate/key pairs, ticket key files, key-encryption key
and password files the file names. Every problem is reported, each with its
field path. Exit status 1 if any file has a problem.`,
	Flags:        configCheckFlags,
	Interspersed: true,
}

func configCheckFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	return func(args []string) error {
		if len(args) == 0 {
			return errUsage
		}
		var errs []error
		for _, path := range args {
			if _, err := config.Load(path); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(stdout, "%s: ok\n", path)
		}
		return errors.Join(errs...)
	}
}
