package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/internal/buildinfo"
)

var versionCommand = &command{
	Name:  "version",
	Short: "print the version, commit and Go version",
	Flags: versionFlags,
}

func versionFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	jsonOut := fs.Bool("json", false, "print JSON")
	return func(args []string) error {
		if len(args) > 0 {
			return errUsage
		}
		i := buildinfo.Get()
		if *jsonOut {
			e := json.NewEncoder(stdout)
			e.SetIndent("", "  ")
			return e.Encode(i)
		}
		_, err := fmt.Fprintf(stdout, "edgeproxy %s (commit %s, %s)\n", i.Version, i.Commit, i.GoVersion)
		return err
	}
}
