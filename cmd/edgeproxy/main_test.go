package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsage(t *testing.T) {
	if code, _, e := runCmd(t); code != 2 || !strings.Contains(e, "serve") {
		t.Fatalf("no args: code %d, stderr %q", code, e)
	}
	if code, _, e := runCmd(t, "nope"); code != 2 || !strings.Contains(e, `unknown command "nope"`) {
		t.Fatalf("unknown command: code %d, stderr %q", code, e)
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("routes: [{upstreams: [\"http://127.0.0.1:8080\"]}]\n"), 0o600)
	os.WriteFile(bad, []byte("routes: [{upstreams: [\"htp://x\"]}]\nresumption: {mode: psk}\n"), 0o600)
	if code, o, e := runCmd(t, "config", "check", good); code != 0 || !strings.Contains(o, "ok") {
		t.Fatalf("good config: code %d, %q %q", code, o, e)
	}
	code, _, e := runCmd(t, "config", "check", bad)
	if code != 1 || !strings.Contains(e, `routes[0].upstreams[0]: "htp://x"`) || !strings.Contains(e, `resumption.mode: "psk"`) {
		t.Fatalf("bad config: code %d, stderr %q; want both errors", code, e)
	}
}

func TestKeysGenInspect(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "ticket.key")
	if code, _, e := runCmd(t, "keys", "gen", "--format", "binary", "--out", f, "--size", "48", "--count", "2"); code != 0 {
		t.Fatalf("keys gen: %d %s", code, e)
	}
	fi, err := os.Stat(f)
	if err != nil || fi.Size() != 96 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, size %d, mode %v; want 96 bytes, 0600", err, fi.Size(), fi.Mode())
	}
	if code, _, e := runCmd(t, "keys", "gen", "--out", f); code != 1 || !strings.Contains(e, "--force") {
		t.Fatalf("gen over an existing file: code %d, %q; want a refusal naming --force", code, e)
	}
	code, o, e := runCmd(t, "keys", "inspect", f)
	if code != 0 || strings.Count(o, "\n") != 3 || !strings.Contains(o, "seals+opens") {
		t.Fatalf("inspect: code %d, stdout %q, stderr %q", code, o, e)
	}
	raw, _ := os.ReadFile(f)
	secretHex := []byte{}
	for _, b := range raw[16:48] {
		secretHex = append(secretHex, "0123456789abcdef"[b>>4], "0123456789abcdef"[b&15])
	}
	if strings.Contains(o, string(secretHex[:16])) {
		t.Fatal("inspect printed secret key material")
	}
	os.Chmod(f, 0o644)
	if code, _, e := runCmd(t, "keys", "inspect", f); code != 1 || !strings.Contains(e, "chmod 600") {
		t.Fatalf("world-readable file: code %d, %q; want a refusal saying chmod 600", code, e)
	}
	kek := filepath.Join(dir, "kek")
	if code, _, e := runCmd(t, "keys", "kek", "--out", kek); code != 0 {
		t.Fatalf("keys kek: %d %s", code, e)
	}
	if fi, err := os.Stat(kek); err != nil || fi.Size() != 32 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kek file: %v %v", err, fi)
	}
}

// TestConfigCheckLoadsFiles: config check fails, naming each, on what serve
// would fail on at start: a missing certificate, a key that does not match
// its certificate, a ticket key file others can read.
func TestConfigCheckLoadsFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certA, keyA := testserver.WriteCertFiles(t, dir, "a")
	_, keyB := testserver.WriteCertFiles(t, dir, "b")
	keys := filepath.Join(dir, "ticket.key")
	if code, _, e := runCmd(t, "keys", "gen", "--out", keys); code != 0 {
		t.Fatalf("keys gen: %d %s", code, e)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, fmt.Appendf(nil, "tls: {certificates: [{cert: %q, key: %q}]}\nresumption: {ticket_keys: {source: file, files: [%q]}}\nroutes: [{upstreams: [\"http://127.0.0.1:8080\"]}]\n", certA, keyA, keys), 0o600)
	if code, o, e := runCmd(t, "config", "check", good); code != 0 || o != good+": ok\n" {
		t.Fatalf("good config: code %d, %q %q", code, o, e)
	}

	readable := filepath.Join(dir, "readable.key")
	if code, _, e := runCmd(t, "keys", "gen", "--out", readable); code != 0 {
		t.Fatalf("keys gen: %d %s", code, e)
	}
	os.Chmod(readable, 0o644)
	missing := filepath.Join(dir, "missing.crt")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, fmt.Appendf(nil, "tls: {certificates: [{cert: %q, key: %q}, {cert: %q, key: %q}]}\nresumption: {ticket_keys: {source: file, files: [%q]}}\nroutes: [{upstreams: [\"http://127.0.0.1:8080\"]}]\n", missing, keyA, certA, keyB, readable), 0o600)
	code, o, e := runCmd(t, "config", "check", good, bad)
	if code != 1 || o != good+": ok\n" {
		t.Fatalf("good and bad config: code %d, stdout %q; want 1 and the good file ok", code, o)
	}
	for _, want := range []string{
		bad + `: tls.certificates[0].cert: "` + missing + `": no such file or directory`,
		bad + `: tls.certificates[1]: cert "` + certA + `", key "` + keyB + `": tls: private key does not match public key`,
		bad + `: resumption.ticket_keys.files[0]: "` + readable + `" has mode 0644`,
		"1 of 2 file(s) have problems",
	} {
		if !strings.Contains(e, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, e)
		}
	}
}
