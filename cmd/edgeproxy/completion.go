package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Shell completion: each script asks the binary itself for candidates
// ("edgeproxy __complete WORD..."), so commands and flags are completed
// from the same command table that prints the help. When there is no
// candidate (a file argument, a flag value) the shells complete file names.
var completionScripts = []struct{ shell, install, script string }{
	{"bash", `source <(edgeproxy completion bash)     # or save it in /etc/bash_completion.d/edgeproxy`, `# bash completion for edgeproxy
_edgeproxy() {
    local IFS=$'\n'
    COMPREPLY=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _edgeproxy edgeproxy
`},
	{"zsh", `source <(edgeproxy completion zsh)      # after compinit; or save it as _edgeproxy in your $fpath`, `#compdef edgeproxy
# zsh completion for edgeproxy
_edgeproxy() {
    local -a cands
    cands=("${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if (( ${#cands} )) && [[ -n "${cands[1]}" ]]; then
        compadd -- "${cands[@]}"
    else
        _files
    fi
}
if [ "$funcstack[1]" = "_edgeproxy" ]; then
    _edgeproxy "$@"
else
    compdef _edgeproxy edgeproxy
fi
`},
	{"fish", `edgeproxy completion fish | source       # or save it in ~/.config/fish/completions/edgeproxy.fish`, `# fish completion for edgeproxy
function __edgeproxy_complete
    set -l tokens (commandline -opc) (commandline -ct)
    $tokens[1] __complete $tokens[2..-1] 2>/dev/null
end
complete -c edgeproxy -a '(__edgeproxy_complete)'
`},
}

func completionCommands() []*command {
	var cmds []*command
	for _, s := range completionScripts {
		cmds = append(cmds, &command{
			Name:  s.shell,
			Short: "print the " + s.shell + " completion script",
			Long:  fmt.Sprintf("%s prints the %s completion script. To use it:\n\n  %s", s.shell, s.shell, s.install),
			Flags: func(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
				return func(args []string) error {
					if len(args) > 0 {
						return errUsage
					}
					_, err := io.WriteString(stdout, s.script)
					return err
				}
			},
		})
	}
	return cmds
}

// completeCommand answers the completion scripts: given the words after
// "edgeproxy" up to the one being completed, it prints the candidates, one
// a line.
func completeCommand(r *command) *command {
	return &command{
		Name:   "__complete",
		Hidden: true,
		Flags: func(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) error {
			return func(args []string) error {
				for _, c := range complete(r, args) {
					fmt.Fprintln(stdout, c)
				}
				return nil
			}
		},
	}
}

// complete returns the candidates for the last of words (which may be
// empty), the command line after the program name.
func complete(r *command, words []string) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	c := r
	for len(before) > 0 && c.Sub != nil {
		next := find(c, before[0])
		if next == nil {
			return nil
		}
		c, before = next, before[1:]
	}
	var out []string
	if c.Sub != nil {
		for _, s := range c.Sub {
			if !s.Hidden && strings.HasPrefix(s.Name, cur) {
				out = append(out, s.Name)
			}
		}
		if strings.HasPrefix("--help", cur) && cur != "" {
			out = append(out, "--help")
		}
		return out
	}
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Flags(fs, io.Discard, io.Discard)
	if n := len(before); n > 0 && strings.HasPrefix(before[n-1], "-") && !strings.Contains(before[n-1], "=") {
		// The value of a flag that takes one: leave it to the shell.
		if f := fs.Lookup(strings.TrimLeft(before[n-1], "-")); f != nil && !isBool(f) {
			return nil
		}
	}
	if !strings.HasPrefix(cur, "-") {
		return nil
	}
	fs.VisitAll(func(f *flag.Flag) {
		if name := "--" + f.Name; strings.HasPrefix(name, cur) {
			out = append(out, name)
		}
	})
	if strings.HasPrefix("--help", cur) {
		out = append(out, "--help")
	}
	return out
}

func find(c *command, name string) *command {
	for _, s := range c.Sub {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
