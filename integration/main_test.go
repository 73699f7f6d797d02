package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Suite-wide state, set by TestMain before any test runs and read-only after.
var (
	// binPath is the edgeproxy binary under test, built once.
	binPath string
	// certFile and keyFile are the nodes' certificate (self-signed, ECDSA
	// P-256, for localhost and 127.0.0.1) and its key; certPool trusts it.
	certFile, keyFile string
	certPool          *x509.CertPool
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	start := time.Now()
	dir, err := os.MkdirTemp("", "edgeproxy-integration-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinary(dir); err != nil {
		fmt.Fprintf(os.Stderr, "integration: building edgeproxy: %v\n", err)
		return 1
	}
	if err := writeCert(dir); err != nil {
		fmt.Fprintf(os.Stderr, "integration: making the test certificate: %v\n", err)
		return 1
	}
	code := m.Run()
	printSummary(time.Since(start))
	return code
}

// buildBinary builds cmd/edgeproxy into dir, with -race if this test
// binary has it, so that the nodes report data races under real traffic.
// go test puts its own go command first on PATH.
func buildBinary(dir string) error {
	binPath = filepath.Join(dir, "edgeproxy")
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/edgeproxy/edgeproxy/cmd/edgeproxy")
	cmd := exec.Command("go", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// writeCert makes a self-signed ECDSA P-256 certificate for localhost and
// 127.0.0.1 in dir. It is its own root: Go clients trust it through
// certPool, openssl through -CAfile.
func writeCert(dir string) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"edgeproxy integration"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	certPool = x509.NewCertPool()
	certPool.AddCert(cert)
	return nil
}
