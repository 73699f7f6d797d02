package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

var keysGenCommand = &command{
	Name:  "gen",
	Short: "write a ticket key file (HAProxy base64 lines, or nginx binary)",
	Long: `gen writes ticket keys (80 or 48 bytes per key) to --out with mode 0600 or to
standard output: by default as HAProxy's tls-ticket-keys file (one base64 key
per line; the penultimate key seals), with --format binary as nginx's
ssl_session_ticket_key layout (the first key seals). Every file it writes loads
in serve without further options. To rotate, see README: Sharing ticket keys
between nodes.`,
	Flags: keysGenFlags,
}

var keysInspectCommand = &command{
	Name:         "inspect",
	Args:         "FILE...",
	Short:        "list the keys of ticket key files: names, sizes, roles, age; never the secret",
	Flags:        keysInspectFlags,
	Interspersed: true,
}

var keysKEKCommand = &command{
	Name:  "kek",
	Args:  "--out FILE",
	Short: "write a key-encryption key for the redis ticket key source",
	Flags: keysKEKFlags,
}

func keysGenFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	format := fs.String("format", string(ticketkeys.FormatBase64), "layout: base64 (HAProxy tls-ticket-keys, one key per line; the penultimate key seals) or binary (nginx; the first key seals)")
	size := fs.Int("size", ticketkeys.KeySize80, "bytes per key: 80 (AES-256) or 48 (AES-128)")
	count := fs.Int("count", 1, "number of keys")
	out := fs.String("out", "", "file to write with mode 0600 (default: standard output, refused on a terminal)")
	force := fs.Bool("force", false, "replace an existing --out file")
	return func(args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected arguments: %q", args)
		}
		if *out == "" {
			if fi, err := os.Stdout.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && stdout == os.Stdout {
				return errors.New("refusing to write raw key bytes to a terminal: use --out FILE or redirect")
			}
			return ticketkeys.GenerateKeyFile(stdout, ticketkeys.KeyFileFormat(*format), *size, *count, nil)
		}
		if _, err := os.Lstat(*out); err == nil && !*force {
			return fmt.Errorf("%s exists: use --force to replace it (running nodes reload it and lose its keys)", *out)
		}
		if err := ticketkeys.WriteKeyFile(*out, ticketkeys.KeyFileFormat(*format), *size, *count, nil); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %d %s key(s) of %d bytes to %s (mode 0600)\n", *count, *format, *size, *out)
		return nil
	}
}

func keysInspectFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	size := fs.Int("size", 0, "bytes per key, 48 or 80; needed only for a binary file whose size is a multiple of both (240, 480, ...)")
	return func(args []string) error {
		if len(args) == 0 {
			return errUsage
		}
		infos, err := ticketkeys.InspectFiles(ticketkeys.FileConfig{Paths: args, KeySize: *size})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FILE\tINDEX\tNAME\tSIZE\tROLE\tFILE AGE")
		for _, k := range infos {
			role := "opens"
			if k.Sealing {
				role = "seals+opens"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\n", k.Path, k.Index, k.Name, k.Size, role, k.Age.Round(time.Second))
		}
		return tw.Flush()
	}
}

// keysKEK writes a key-encryption key for the redis ticket key source.
func keysKEKFlags(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
	out := fs.String("out", "", "file to write with mode 0600 (required)")
	force := fs.Bool("force", false, "replace an existing file (every node then fails to open the keys stored under the old one)")
	return func(args []string) error {
		if *out == "" || len(args) > 0 {
			return errUsage
		}
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if *force {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		f, err := os.OpenFile(*out, flags, 0o600)
		if err != nil {
			return err
		}
		kek := make([]byte, ticketkeys.KEKSize)
		defer clear(kek)
		if _, err := rand.Read(kek); err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(kek); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote a %d-byte key-encryption key to %s (mode 0600); give every node the same file\n", ticketkeys.KEKSize, *out)
		return nil
	}
}
