package main

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// Cipher lists for the OpenSSL peers: AES-128-GCM first, as crypto/tls
// chooses on a CPU with AES instructions, with server preference, so every
// peer negotiates the same suite whatever order a client offers.
const (
	ciphers12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
	ciphers13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
)

// params is what the configuration templates are rendered with.
type params struct {
	// Dir is the work directory: configs, pid files, logs, temp paths.
	Dir string
	// Cert and Key are the ECDSA P-256 certificate and key every peer
	// serves; PEM is both in one file, for HAProxy.
	Cert, Key, PEM string
	// TicketKey is the nginx-format 80-byte key file (nginx, edgeproxy,
	// the bare Go proxy); HAProxyTicketKeys is the same key base64-encoded,
	// one line per key slot, as HAProxy's tls-ticket-keys wants.
	TicketKey, HAProxyTicketKeys string
	// Port is the peer's listen port, UpstreamPort the common upstream's.
	Port, UpstreamPort int
	// MaxConns caps connections per process or worker; NoFile is the file
	// limit the nginx workers ask for.
	MaxConns, NoFile int
	// Ciphers12 and Ciphers13 are the OpenSSL peers' suite lists.
	Ciphers12, Ciphers13 string
}

// newParams returns the parameters for a work directory holding cert.pem,
// key.pem and ticket.key, sized for idle connections at once.
func newParams(dir string, idle int) params {
	return params{
		Dir:               dir,
		Cert:              filepath.Join(dir, "cert.pem"),
		Key:               filepath.Join(dir, "key.pem"),
		PEM:               filepath.Join(dir, "haproxy.pem"),
		TicketKey:         filepath.Join(dir, "ticket.key"),
		HAProxyTicketKeys: filepath.Join(dir, "haproxy-ticket.keys"),
		MaxConns:          idle + 1024,
		NoFile:            2*idle + 4096,
		Ciphers12:         ciphers12,
		Ciphers13:         ciphers13,
	}
}

// render executes the template name (a file under templates/ without its
// .tmpl suffix) with p.
func render(name string, p params) ([]byte, error) {
	t, err := template.New(name+".tmpl").Option("missingkey=error").ParseFS(templateFS, "templates/"+name+".tmpl")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeConfig renders the template name into the work directory and returns
// the file's path.
func writeConfig(name string, p params) (string, error) {
	b, err := render(name, p)
	if err != nil {
		return "", err
	}
	path := filepath.Join(p.Dir, fmt.Sprintf("%s.%d", name, p.Port))
	return path, os.WriteFile(path, b, 0o600)
}
