package configs

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// checkWithStandIns runs what `edgeproxy config check` runs (Validate, then
// CheckFiles) on c, after replacing every file it names (certificates,
// ticket keys, KEK, passwords: secrets that only exist where it is
// deployed) with a valid stand-in in a temporary directory. It returns the
// original paths, for the caller to check that they are mounted.
func checkWithStandIns(t *testing.T, c *config.Config) (paths []string) {
	t.Helper()
	dir := t.TempDir()
	n := 0
	standIn := func(orig *string, write func(path string)) {
		if *orig == "" {
			return
		}
		paths = append(paths, *orig)
		n++
		p := filepath.Join(dir, strings.Repeat("f", n))
		write(p)
		*orig = p
	}
	secret := func(size int, text bool) func(string) {
		return func(p string) {
			b := make([]byte, size)
			rand.Read(b)
			if text {
				b = []byte("standin-password\n")
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range c.TLS.Certificates {
		cc := &c.TLS.Certificates[i]
		cert, key := testserver.WriteCertFiles(t, dir, "cert"+strings.Repeat("x", i))
		standIn(&cc.Cert, func(p string) { os.Rename(cert, p) })
		standIn(&cc.Key, func(p string) { os.Rename(key, p) })
	}
	k := &c.Resumption.TicketKeys
	for i := range k.Files {
		standIn(&k.Files[i], func(p string) {
			if err := ticketkeys.WriteKeyFile(p, ticketkeys.FormatBinary, ticketkeys.KeySize80, 2, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
	standIn(&k.Redis.KEKFile, secret(ticketkeys.KEKSize, false))
	standIn(&k.Redis.PasswordFile, secret(0, true))
	standIn(&c.Resumption.Redis.PasswordFile, secret(0, true))
	if err := errors.Join(c.Validate(), c.CheckFiles()); err != nil {
		t.Errorf("config check (with stand-ins for %q): %v", paths, err)
	}
	return paths
}

// loadConfig decodes an edgeproxy configuration from data as serve does.
func loadConfig(t *testing.T, data []byte) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgeproxy.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadUnvalidated(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// underAny reports whether path is one of dirs or inside one.
func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// TestExampleConfigsPassCheck: every edgeproxy configuration under configs/
// passes config check, with stand-ins for the files it names.
func TestExampleConfigsPassCheck(t *testing.T) {
	t.Parallel()
	// The examples at the top, and every file named edgeproxy*.yaml below
	// (Compose mounts, Kubernetes ConfigMap sources).
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, "/") && strings.HasPrefix(d.Name(), "edgeproxy") && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return err
	})
	if len(files) < 9 {
		t.Fatalf("found only %q", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			checkWithStandIns(t, loadConfig(t, data))
		})
	}
}
