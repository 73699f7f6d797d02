package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// command is one command or group of subcommands, with its usage kept as
// data (the go command's base.Command) so that help, the top-level list
// and shell completion come from one place.
type command struct {
	// Name is the word that selects the command.
	Name string
	// Args names the positional arguments on the usage line, e.g.
	// "FILE...". Empty: none.
	Args string
	// Short is the one-line summary shown in lists.
	Short string
	// Long, if not empty, is shown under the usage line of the command's
	// own help instead of Short.
	Long string
	// Flags defines the command's flags on fs and returns the function
	// that runs it with the positional arguments left after parsing. Nil
	// for a group.
	Flags func(fs *flag.FlagSet, stdout, stderr io.Writer) func(args []string) error
	// Interspersed lets flags follow positional arguments
	// ("probe HOST:PORT --json").
	Interspersed bool
	// Sub are the subcommands of a group.
	Sub []*command
	// Hidden leaves the command out of help and completion.
	Hidden bool
}

// errUsage means the positional arguments were wrong: the dispatcher prints
// the usage line and exits 2.
var errUsage = errors.New("usage")

// dispatch runs c (reached through path, e.g. ["edgeproxy", "keys"]) with
// args and returns the exit code: 0 on success and for -h/--help (usage on
// stdout), 2 for unknown commands, unknown flags and wrong arguments (a
// one-line hint on stderr), 1 when the command fails.
func dispatch(c *command, path []string, args []string, stdout, stderr io.Writer) int {
	path = append(path[:len(path):len(path)], c.Name)
	full := strings.Join(path, " ")
	if c.Sub != nil {
		if len(args) == 0 {
			writeUsage(stderr, c, path, nil)
			return 2
		}
		switch args[0] {
		case "-h", "-help", "--help":
			writeUsage(stdout, c, path, nil)
			return 0
		case "help":
			// "edgeproxy help keys gen" is "edgeproxy keys gen --help".
			return dispatch(c, path[:len(path)-1], append(args[1:len(args):len(args)], "--help"), stdout, stderr)
		}
		for _, s := range c.Sub {
			if s.Name == args[0] {
				return dispatch(s, path, args[1:], stdout, stderr)
			}
		}
		what := "command"
		if strings.HasPrefix(args[0], "-") {
			what = "flag"
		}
		fmt.Fprintf(stderr, "%s: unknown %s %q (run '%s --help' for usage)\n", full, what, args[0], full)
		return 2
	}

	fs := flag.NewFlagSet(full, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	runFn := c.Flags(fs, stdout, stderr)
	pos, err := parseFlags(fs, args, c.Interspersed)
	if errors.Is(err, flag.ErrHelp) {
		writeUsage(stdout, c, path, fs)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (run '%s --help' for usage)\n", full, err, full)
		return 2
	}
	switch err := runFn(pos); {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "usage: %s\nrun '%s --help' for details\n", usageLine(c, path), full)
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", full, err)
		return 1
	}
}

// parseFlags parses args into fs and returns the positional arguments.
// With interspersed, flags may also follow positional arguments; "--" ends
// the flags either way.
func parseFlags(fs *flag.FlagSet, args []string, interspersed bool) ([]string, error) {
	if !interspersed {
		err := fs.Parse(args)
		return fs.Args(), err
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func usageLine(c *command, path []string) string {
	line := strings.Join(path, " ")
	if c.Sub != nil {
		return line + " COMMAND"
	}
	if c.Args != "" {
		line += " " + c.Args
	}
	return line + " [flags]"
}

// writeUsage prints a command's help: usage line, description, and its
// flags or (for a group) every command below it.
func writeUsage(w io.Writer, c *command, path []string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n", usageLine(c, path))
	if c.Long != "" || c.Short != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmp.Or(c.Long, c.Short)))
	}
	if c.Sub != nil {
		fmt.Fprintln(w, "\ncommands:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		walk(c, nil, func(p []string, leaf *command) {
			fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(strings.Join(p, " ")+" "+leaf.Args), leaf.Short)
		})
		tw.Flush()
		fmt.Fprintf(w, "\nrun '%s COMMAND --help' for a command's flags\n", strings.Join(path, " "))
		return
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nflags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// walk calls fn for every visible command below c that runs (not a group),
// with its path relative to c.
func walk(c *command, path []string, fn func(path []string, leaf *command)) {
	for _, s := range c.Sub {
		if s.Hidden {
			continue
		}
		p := append(path[:len(path):len(path)], s.Name)
		if s.Sub != nil {
			walk(s, p, fn)
			continue
		}
		fn(p, s)
	}
}
