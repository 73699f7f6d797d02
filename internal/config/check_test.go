package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

func writeFile(t *testing.T, path, data string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not subject to umask
		t.Fatal(err)
	}
	return path
}

func TestCheckGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := testserver.WriteCertFiles(t, dir, "a")
	keys := filepath.Join(dir, "ticket.key")
	if err := ticketkeys.WriteKeyFile(keys, ticketkeys.FormatBinary, ticketkeys.KeySize80, 2, nil); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), fmt.Sprintf(`
tls: {certificates: [{cert: %q, key: %q}]}
resumption: {ticket_keys: {source: file, files: [%q]}}
`+goodRoute, cert, key, keys), 0o600)
	if _, err := Check(cfg); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// TestCheckReportsEveryFileProblem: what serve would fail on at start is
// reported at once, each problem naming its field.
func TestCheckReportsEveryFileProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certA, _ := testserver.WriteCertFiles(t, dir, "a")
	_, keyB := testserver.WriteCertFiles(t, dir, "b")
	keys := filepath.Join(dir, "ticket.key")
	if err := ticketkeys.WriteKeyFile(keys, ticketkeys.FormatBinary, ticketkeys.KeySize80, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keys, 0o644); err != nil {
		t.Fatal(err)
	}
	short := writeFile(t, filepath.Join(dir, "short.key"), strings.Repeat("\x01", 50), 0o600) // binary, not base64 text
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), fmt.Sprintf(`
tls:
  certificates:
    - {cert: %q, key: %q}
    - {cert: %q, key: %q}
resumption: {ticket_keys: {source: file, files: [%q, %q]}}
`+goodRoute, filepath.Join(dir, "missing.crt"), keyB, certA, keyB, keys, short), 0o600)

	_, err := Check(cfg)
	if err == nil {
		t.Fatal("Check passed a configuration serve cannot start with")
	}
	for _, want := range []string{
		`tls.certificates[0].cert: "` + filepath.Join(dir, "missing.crt") + `": no such file`,
		`tls.certificates[1]: cert "` + certA + `", key "` + keyB + `": tls: private key does not match public key`,
		`resumption.ticket_keys.files[0]: "` + keys + `" has mode 0644`,
		`resumption.ticket_keys.files[1]: ticketkeys: key file "` + short + `": size 50 bytes is not a whole number of keys`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
}

func TestCheckKEKAndPasswordFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kek := writeFile(t, filepath.Join(dir, "kek"), strings.Repeat("k", 31), 0o600)
	pw := writeFile(t, filepath.Join(dir, "pw"), "secret\n", 0o644)
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), fmt.Sprintf(`
resumption:
  ticket_keys: {source: redis, redis: {addrs: ["127.0.0.1:1"], kek_file: %q, password_file: %q}}
`+goodRoute, kek, pw), 0o600)
	_, err := Check(cfg)
	for _, want := range []string{
		`resumption.ticket_keys.redis.kek_file: ticketkeys: key-encryption key file "` + kek + `" is 31 bytes`,
		`resumption.ticket_keys.redis.password_file: "` + pw + `" has mode 0644`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}

	// Good files: the check passes without reaching Redis (nothing listens
	// on port 1).
	writeFile(t, kek, strings.Repeat("k", 32), 0o600)
	writeFile(t, pw, "secret\n", 0o600)
	if _, err := Check(cfg); err != nil {
		t.Fatalf("good KEK and password files: %v", err)
	}
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"timeouts:\n  idle: 120\n", "timeouts.idle: 120: a duration needs a unit, e.g. 120s"},
		{"timeouts: {handshake: 5s, write: 7}\n", "timeouts.write: 7: a duration needs a unit, e.g. 7s"},
		{"routes: [{upstreams: [\"http://a:1\"], health_check: {interval: soon}}]\n", `routes[0].health_check.interval: "soon": not a duration`},
		{"resumption:\n  session_lifetime: 12\n", "resumption.session_lifetime: 12: a duration needs a unit"},
		{"limits:\n  max_connections: lots\n", "limits.max_connections (line 2): cannot unmarshal !!str `lots` into int"},
		{"tls:\n  min_versoin: \"1.3\"\n", "tls.min_versoin (line 2): field min_versoin not found in type config.TLS (known: acme, certificates, client_auth, min_version, strict_sni_host)"},
	}
	for _, tt := range tests {
		_, err := Parse(strings.NewReader(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v; want it to contain %q", tt.in, err, tt.want)
		}
	}
}
