package probe

import (
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"testing"
)

// TestProbeDeadTargetSaysConnectionFailed: a closed port is a failed
// connection, not an unsupported TLS version (#14); a server that refuses
// the version is still "not supported".
func TestProbeDeadTargetSaysConnectionFailed(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	rep := run(t, Config{Addr: dead, NoOpenSSL: true})
	var text bytes.Buffer
	if err := WriteText(&text, rep); err != nil {
		t.Fatal(err)
	}
	for _, vr := range rep.Versions {
		if vr.Supported || !vr.ConnectFailed || !strings.HasPrefix(vr.Verdicts[0], "connection failed: ") {
			t.Errorf("TLS %s against a closed port: %+v", vr.Version, vr)
		}
	}
	if strings.Contains(text.String(), "not supported") || strings.Count(text.String(), "connection failed: ") != 2 {
		t.Errorf("report:\n%s", text.String())
	}

	addr := goServer(t, &tls.Config{MaxVersion: tls.VersionTLS12})
	vr := run(t, Config{Addr: addr, Versions: []uint16{tls.VersionTLS13}, NoOpenSSL: true}).Versions[0]
	if vr.ConnectFailed || !strings.HasPrefix(vr.Verdicts[0], "not supported: ") {
		t.Errorf("TLS 1.3 against a 1.2-only server: %+v", vr)
	}
}
