package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

func TestClientAuthParsesAndDefaultsStrictSNI(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, tls  string
		on, strict bool
	}{
		{"off", `{}`, false, false},
		{"global", `{client_auth: {mode: require, ca_files: [/ca.pem]}}`, true, true},
		{"explicit opt-out", `{strict_sni_host: false, client_auth: {mode: verify_if_given, ca_files: [/ca.pem]}}`, true, false},
		{"explicit on", `{strict_sni_host: true}`, false, true},
		{"per certificate", `{certificates: [{cert: /a.pem, key: /a.key, client_auth: {mode: require, ca_files: [/ca.pem]}}]}`, true, true},
		{"per certificate none", `{certificates: [{cert: /a.pem, key: /a.key, client_auth: {mode: none}}]}`, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader("tls: " + tt.tls + goodRoute))
			if err != nil {
				t.Fatal(err)
			}
			if c.TLS.ClientAuthOn() != tt.on || c.TLS.StrictSNI() != tt.strict {
				t.Errorf("ClientAuthOn %v, StrictSNI %v; want %v, %v", c.TLS.ClientAuthOn(), c.TLS.StrictSNI(), tt.on, tt.strict)
			}
		})
	}
}

func TestClientAuthValidateNamesFields(t *testing.T) {
	t.Parallel()
	_, err := Parse(strings.NewReader(`
tls:
  client_auth:
    mode: optional
    headers: {subject: "X Bad"}
  certificates:
    - {cert: /a.pem, key: /a.key, client_auth: {ca_files: [/ca.pem]}}
    - {cert: /b.pem, key: /b.key, client_auth: {mode: require}}
    - {cert: /c.pem, key: /c.key, client_auth: {mode: require, ca_files: [""]}}
` + goodRoute))
	if err == nil {
		t.Fatal("Parse accepted bad client_auth settings")
	}
	for _, want := range []string{
		`tls.client_auth.mode: "optional": must be require, verify_if_given or none`,
		`tls.client_auth.headers.subject: "X Bad": not a valid header name`,
		`tls.certificates[0].client_auth.mode: required`,
		`tls.certificates[0].client_auth.ca_files: set, but mode is ""`,
		`tls.certificates[1].client_auth.ca_files: required with mode require`,
		`tls.certificates[2].client_auth.ca_files[0]: empty path`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestCheckLoadsClientCAFiles: config check reads the CA files as serve
// does, and names the field of each bad one.
func TestCheckLoadsClientCAFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testserver.NewCA(t, "clients")
	notPEM := writeFile(t, filepath.Join(dir, "not.pem"), "hello\n", 0o600)
	write := func(caFiles string) string {
		return writeFile(t, filepath.Join(dir, "c.yaml"), fmt.Sprintf(`
tls: {client_auth: {mode: require, ca_files: %s}}
`+goodRoute, caFiles), 0o600)
	}
	if _, err := Check(write(fmt.Sprintf("[%q]", ca.File))); err != nil {
		t.Fatalf("Check with a good CA file: %v", err)
	}
	_, err := Check(write(fmt.Sprintf("[%q, %q]", notPEM, filepath.Join(dir, "missing.pem"))))
	if err == nil {
		t.Fatal("Check accepted a CA file without certificates")
	}
	if want := `tls.client_auth.ca_files[0]: "` + notPEM + `": no PEM certificate found`; !strings.Contains(err.Error(), want) {
		t.Errorf("error lacks %q:\n%v", want, err)
	}
}
