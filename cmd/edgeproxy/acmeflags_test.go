package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The ACME flags land in tls.acme and are validated like the file: a bad
// CA URL stops serve before it listens.
func TestServeACMEFlags(t *testing.T) {
	t.Parallel()
	code, _, e := runCmd(t, "serve", "--listen", "127.0.0.1:0", "--admin", "", "--acme-host", "a.example.com,*.example.com", "--acme-ca", "ftp://ca")
	if code != 1 || !strings.Contains(e, `tls.acme.ca: "ftp://ca": must be an http or https URL`) ||
		!strings.Contains(e, `tls.acme.hosts[1]: "*.example.com": wildcards need the DNS-01 challenge`) {
		t.Fatalf("code %d, stderr %q", code, e)
	}
}

func TestConfigCheckACME(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("routes: [{upstreams: [\"http://127.0.0.1:8080\"]}]\ntls: {acme: {hosts: [], on_demand: {}}}\n"), 0o600)
	code, _, e := runCmd(t, "config", "check", bad)
	if code != 1 || !strings.Contains(e, "tls.acme.on_demand: set allow, ask or both") {
		t.Fatalf("code %d, stderr %q", code, e)
	}
}
