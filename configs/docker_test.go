package configs

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// dockerfile is the repository's Dockerfile, split into instructions with
// line continuations joined.
func dockerfile(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

func TestDockerfileInvariants(t *testing.T) {
	t.Parallel()
	ins := dockerfile(t)
	var froms, users []string
	var healthcheck, build string
	for _, in := range ins {
		switch verb, rest, _ := strings.Cut(in, " "); strings.ToUpper(verb) {
		case "FROM":
			froms = append(froms, rest)
		case "USER":
			users = append(users, rest)
		case "HEALTHCHECK":
			healthcheck = rest
		case "RUN":
			if strings.Contains(rest, "go build") {
				build = rest
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %q", froms)
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "scratch") && !strings.HasPrefix(final, "gcr.io/distroless/static") {
		t.Errorf("final stage %q: want scratch or distroless static", final)
	}
	if len(users) == 0 {
		t.Fatal("no USER: the image would run as root")
	}
	if u := users[len(users)-1]; strings.HasPrefix(u, "0") || strings.HasPrefix(u, "root") || !regexp.MustCompile(`^\d+(:\d+)?$`).MatchString(u) {
		t.Errorf("USER %q: want a numeric non-root user (runAsNonRoot verifies only numbers)", u)
	}
	if !strings.Contains(healthcheck, `"healthcheck"`) || !strings.Contains(healthcheck, "/healthz") {
		t.Errorf("HEALTHCHECK %q: want the binary's own healthcheck on /healthz", healthcheck)
	}
	for _, flag := range []string{"CGO_ENABLED=0", "-trimpath", "buildinfo.Version=${VERSION}", "buildinfo.Commit=${COMMIT}"} {
		if !strings.Contains(build, flag) {
			t.Errorf("build command %q lacks %s", build, flag)
		}
	}
}

// TestDockerfileBuild runs the Dockerfile's `go build` line, with its flags,
// where no Docker engine is available: the binary must be static (no
// program interpreter, no dynamic section, so it runs on scratch or
// distroless) and report the version and commit stamped by -ldflags.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	var build string
	for _, in := range dockerfile(t) {
		if rest, ok := strings.CutPrefix(in, "RUN "); ok && strings.Contains(rest, "go build") {
			build = rest
		}
	}
	if build == "" {
		t.Fatal("no RUN go build line in the Dockerfile")
	}
	out := filepath.Join(t.TempDir(), "edgeproxy")
	oFlag := regexp.MustCompile(`-o\s+\S+`)
	if !oFlag.MatchString(build) {
		t.Fatalf("build command %q has no -o", build)
	}
	build = oFlag.ReplaceAllLiteralString(build, "-o "+out)
	const version, commit = "v9.8.7-test", "0123abc"
	vars := map[string]string{"VERSION": version, "COMMIT": commit, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	build = os.Expand(build, func(k string) string { return vars[k] })
	t.Logf("running: %s", build)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}

	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %s program header: not static", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("binary has a .dynamic section: not static")
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary imports %q", libs)
	}

	b, err := exec.Command(out, "version").Output()
	if err != nil || !strings.Contains(string(b), version) || !strings.Contains(string(b), commit) {
		t.Errorf("version: %q, %v; want %s and %s", b, err, version, commit)
	}
	b, err = exec.Command(out, "version", "--json").Output()
	var v struct{ Version, Commit string }
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil || v.Version != version || v.Commit != commit {
		t.Errorf("version --json: %q, %v", b, err)
	}

	// The bash completion script, end to end through the binary.
	if bash, err := exec.LookPath("bash"); err == nil {
		script, err := exec.Command(out, "completion", "bash").Output()
		if err != nil {
			t.Fatal(err)
		}
		c := exec.Command(bash, "--norc", "-c", string(script)+`
COMP_WORDS=("$EP" keys i); COMP_CWORD=2; _edgeproxy; printf '%s\n' "${COMPREPLY[@]}"
COMP_WORDS=("$EP" serve --resum); COMP_CWORD=2; _edgeproxy; printf '%s\n' "${COMPREPLY[@]}"`)
		c.Env = append(os.Environ(), "EP="+out)
		got, err := c.Output()
		if err != nil || !bytes.Equal(got, []byte("inspect\n--resumption\n")) {
			t.Errorf("bash completion: %q, %v; want inspect and --resumption", got, err)
		}
	}
}
