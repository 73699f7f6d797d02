package app

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"path/filepath"
	"testing"

	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// TestKeyFileFormatsInteroperate: a node reading nginx's binary key file and
// a node reading the same keys as HAProxy's base64 tls-ticket-keys file
// resume each other's sessions, though each seals with a different key
// of the four (binary: the first; base64: the penultimate). A node with other
// keys resumes neither (#14).
func TestKeyFileFormatsInteroperate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var raw bytes.Buffer
	if err := ticketkeys.GenerateKeyFile(&raw, ticketkeys.FormatBinary, ticketkeys.KeySize80, 2, nil); err != nil {
		t.Fatal(err)
	}
	raw.Write(newKey(t))
	raw.Write(newKey(t))
	var lines bytes.Buffer
	for off := 0; off < raw.Len(); off += ticketkeys.KeySize80 {
		lines.WriteString(base64.StdEncoding.EncodeToString(raw.Bytes()[off : off+ticketkeys.KeySize80]))
		lines.WriteString("\n")
	}
	binFile, b64File, otherFile := filepath.Join(dir, "nginx.key"), filepath.Join(dir, "haproxy.keys"), filepath.Join(dir, "other.key")
	writeKeys(t, binFile, raw.Bytes())
	writeKeys(t, b64File, lines.Bytes())
	writeKeys(t, otherFile, newKey(t))
	bin, b64, other := fleet(t, 1, binFile)[0], fleet(t, 1, b64File)[0], fleet(t, 1, otherFile)[0]

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(proxy.VersionName(v), func(t *testing.T) {
			for _, p := range []struct {
				name     string
				from, to *App
			}{{"binary to base64", bin, b64}, {"base64 to binary", b64, bin}} {
				cache := tls.NewLRUClientSessionCache(1)
				if connect(t, p.from.Addr().String(), v, cache) {
					t.Fatalf("%s: the first connection resumed", p.name)
				}
				if connect(t, other.Addr().String(), v, snapshot(cache)) {
					t.Fatalf("%s: a node with other keys resumed the session", p.name)
				}
				if !connect(t, p.to.Addr().String(), v, cache) {
					t.Errorf("%s: the session did not resume", p.name)
				}
			}
		})
	}
}
