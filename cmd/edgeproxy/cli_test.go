package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// everyCommand returns the path (after "edgeproxy") of every command and
// group, the root included.
func everyCommand() [][]string {
	var out [][]string
	var visit func(c *command, path []string)
	visit = func(c *command, path []string) {
		out = append(out, path)
		for _, s := range c.Sub {
			if !s.Hidden {
				visit(s, append(path[:len(path):len(path)], s.Name))
			}
		}
	}
	visit(root(), nil)
	return out
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	for _, path := range everyCommand() {
		for _, h := range []string{"-h", "--help"} {
			args := append(slices.Clone(path), h)
			code, o, e := runCmd(t, args...)
			want := "usage: " + strings.Join(append([]string{"edgeproxy"}, path...), " ")
			if code != 0 || !strings.HasPrefix(o, want) || e != "" {
				t.Errorf("%q: code %d, stdout %q, stderr %q; want 0 and usage %q on stdout only", args, code, o, e, want)
			}
		}
	}
	// "help X" is "X --help".
	if code, o, _ := runCmd(t, "help", "keys", "kek"); code != 0 || !strings.HasPrefix(o, "usage: edgeproxy keys kek --out FILE") {
		t.Errorf("help keys kek: code %d, stdout %q", code, o)
	}
}

func TestTopLevelHelpListsEveryCommand(t *testing.T) {
	t.Parallel()
	_, o, _ := runCmd(t, "--help")
	for _, path := range everyCommand() {
		if len(path) == 0 || find(rootAt(path[:len(path)-1]), path[len(path)-1]).Sub != nil {
			continue
		}
		if !strings.Contains(o, "\n  "+strings.Join(path, " ")) {
			t.Errorf("top-level help does not list %q:\n%s", path, o)
		}
	}
	if strings.Contains(o, "__complete") {
		t.Error("top-level help lists the hidden __complete")
	}
}

func rootAt(path []string) *command {
	c := root()
	for _, p := range path {
		c = find(c, p)
	}
	return c
}

func TestUnknownFlagsAndCommands(t *testing.T) {
	t.Parallel()
	for _, path := range everyCommand() {
		args := append(slices.Clone(path), "--no-such-flag")
		code, o, e := runCmd(t, args...)
		if code != 2 || o != "" || strings.Count(e, "\n") != 1 || !strings.Contains(e, "no-such-flag") || !strings.Contains(e, "--help") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and a one-line hint", args, code, o, e)
		}
	}
	for _, args := range [][]string{{"nope"}, {"keys", "nope"}, {"config", "nope"}, {"completion", "tcsh"}} {
		code, _, e := runCmd(t, args...)
		if code != 2 || strings.Count(e, "\n") != 1 || !strings.Contains(e, `unknown command "`+args[len(args)-1]+`"`) {
			t.Errorf("%q: code %d, stderr %q; want 2 and one line naming the command", args, code, e)
		}
	}
	// Wrong positional arguments: the usage line, exit 2.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "check"}, "usage: edgeproxy config check FILE..."},
		{[]string{"keys", "inspect"}, "usage: edgeproxy keys inspect FILE..."},
		{[]string{"keys", "kek"}, "usage: edgeproxy keys kek --out FILE"},
		{[]string{"probe"}, "usage: edgeproxy probe HOST:PORT"},
		{[]string{"version", "x"}, "usage: edgeproxy version [flags]"},
	} {
		if code, _, e := runCmd(t, tt.args...); code != 2 || !strings.HasPrefix(e, tt.want) {
			t.Errorf("%q: code %d, stderr %q; want 2 and %q", tt.args, code, e, tt.want)
		}
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	t.Parallel()
	// config check FILE --help still answers help (interspersed flags).
	if code, o, _ := runCmd(t, "config", "check", "x.yaml", "--help"); code != 0 || !strings.HasPrefix(o, "usage:") {
		t.Fatalf("config check x.yaml --help: code %d, stdout %q", code, o)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, o, e := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(o, "edgeproxy ") || !strings.Contains(o, "go1.") {
		t.Fatalf("version: code %d, %q %q", code, o, e)
	}
	code, o, _ = runCmd(t, "version", "--json")
	var v struct{ Version, Commit, GoVersion string }
	if err := json.Unmarshal([]byte(o), &v); code != 0 || err != nil || v.Version == "" || v.Commit == "" {
		t.Fatalf("version --json: code %d, %q: %v", code, o, err)
	}
	if code, o2, _ := runCmd(t, "--version"); code != 0 || o2 != strings.SplitN(o2, "\n", 2)[0]+"\n" || !strings.HasPrefix(o2, "edgeproxy ") {
		t.Fatalf("--version: code %d, %q", code, o2)
	}
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if code, _, e := runCmd(t, "healthcheck", "--url", srv.URL+"/healthz"); code != 0 {
		t.Fatalf("healthy: code %d, %q", code, e)
	}
	if code, _, e := runCmd(t, "healthcheck", "--url", srv.URL+"/readyz"); code != 1 || !strings.Contains(e, "503") {
		t.Fatalf("503: code %d, %q; want 1 naming the status", code, e)
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	if code, _, e := runCmd(t, "healthcheck", "--url", dead.URL+"/healthz", "--timeout", "2s"); code != 1 {
		t.Fatalf("refused: code %d, %q; want 1", code, e)
	}
}

func TestComplete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		words []string
		want  []string
	}{
		{[]string{""}, []string{"serve", "config", "keys", "upstream", "demo", "bench", "probe", "version", "healthcheck", "completion"}},
		{[]string{"k"}, []string{"keys"}},
		{[]string{"keys", ""}, []string{"gen", "inspect", "kek"}},
		{[]string{"keys", "gen", "--s"}, []string{"--size"}},
		{[]string{"serve", "--re"}, []string{"--redis", "--resumption"}},
		{[]string{"serve", "--config", ""}, nil}, // a file name: the shell completes it
		{[]string{"serve", "--dev", "--p"}, []string{"--pprof"}},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"nope", ""}, nil},
	}
	for _, tt := range tests {
		code, o, _ := runCmd(t, append([]string{"__complete"}, tt.words...)...)
		got := strings.Fields(o)
		if code != 0 || !slices.Equal(got, tt.want) {
			t.Errorf("complete %q: code %d, %q; want %q", tt.words, code, got, tt.want)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, o, e := runCmd(t, "completion", sh)
		if code != 0 || !strings.Contains(o, "__complete") {
			t.Errorf("completion %s: code %d, %q", sh, code, e)
			continue
		}
		// Each shell checks its script's syntax where it is installed.
		path, err := exec.LookPath(sh)
		if err != nil {
			t.Logf("%s not installed: syntax not checked", sh)
			continue
		}
		cmd := exec.Command(path, "-n")
		cmd.Stdin = strings.NewReader(o)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
}
