package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/app"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// edgeproxyNode starts one edgeproxy node (mode tickets, generated keys) on
// loopback in front of the built-in demo app.
func edgeproxyNode(t *testing.T) string {
	t.Helper()
	off, noAccess := "", false
	cfg := config.Config{Listen: "127.0.0.1:0", Admin: &off, Log: config.Log{Access: &noAccess}}
	a, err := app.New(app.Options{Config: &cfg, Logger: zap.NewNop(), BuiltinUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a.Addr().String()
}

// goServer starts a crypto/tls server that reads until the client closes.
func goServer(t *testing.T, conf *tls.Config) string {
	t.Helper()
	certs, err := proxy.SelfSignedCerts()
	if err != nil {
		t.Fatal(err)
	}
	conf.GetCertificate = certs.GetCertificate
	return testserver.TLSDiscard(t, conf)
}

// writeCert writes a self-signed ECDSA certificate for localhost and
// 127.0.0.1 and its key as PEM files in dir.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	return testserver.WriteCertFiles(t, dir, "cert")
}

// nginxLifetime is the ssl_session_timeout the test nginx runs with: its
// ticket lifetime hint.
const nginxLifetime = 300

// startNginx runs nginx (Debian nginx-light) with tickets and a shared
// session cache on a free loopback port, and kills it at the end of the
// test. Without nginx the test fails, unless EDGEPROXY_SKIP_SERVERS=1.
func startNginx(t *testing.T) string {
	t.Helper()
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("nginx"); err == nil {
			bin = p
		} else if os.Getenv("EDGEPROXY_SKIP_SERVERS") == "1" {
			t.Skip("nginx not installed and EDGEPROXY_SKIP_SERVERS=1")
		} else {
			t.Fatal("nginx is not installed: apt-get install nginx-light (or set EDGEPROXY_SKIP_SERVERS=1)")
		}
	}
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	port := testserver.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
%s
pid %s;
error_log %s warn;
events {}
http {
  access_log off;
  client_body_temp_path %[4]s/body;
  proxy_temp_path %[4]s/proxy;
  server {
    listen %s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:1m;
    ssl_session_timeout %ds;
    location / { return 200 "ok\n"; }
  }
}
`, user, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), dir, addr, certFile, keyFile, nginxLifetime)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	// Poll the port, with a bound; stop early if nginx exits.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited before listening: %s\n%s", out.String(), log)
		default:
		}
		if i == 500 {
			t.Fatalf("nginx not listening on %s after 10s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a socket, not synchronising goroutines
	}
}

// needOpenSSL fails the test without openssl, unless
// EDGEPROXY_SKIP_SERVERS=1.
func needOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("EDGEPROXY_SKIP_SERVERS") == "1" {
			t.Skip("openssl not installed and EDGEPROXY_SKIP_SERVERS=1")
		}
		t.Fatal("openssl is not installed: apt-get install openssl (or set EDGEPROXY_SKIP_SERVERS=1)")
	}
}

type syncBuffer struct {
	mu sync.Mutex // mu protects b
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}
