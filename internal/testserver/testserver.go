// Package testserver starts real redis-server and memcached processes on free
// loopback ports for tests, and stops them when the test ends.
//
// A missing binary fails the test, unless EDGEPROXY_SKIP_SERVERS=1 is set (an
// opt-out for developers' quick runs; CI never sets it).
package testserver

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running server process.
type Server struct {
	Addr  string // host:port on 127.0.0.1
	Port  int
	cmd   *exec.Cmd
	t     testing.TB
	name  string
	args  []string
	ready string // the line that says the server is ready; "" to dial only
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	// Below the kernel's ephemeral range: a port that range hands out can
	// be taken by any test's outgoing connection between this check and the
	// server's bind (a Redis Cluster node once failed to bind its bus port
	// that way in CI). Ports below it are handed out only on request.
	if lo := ephemeralLow(); lo > 1024+1000 {
		for range 100 {
			port := 1024 + rand.IntN(lo-1024)
			if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				ln.Close()
				return port
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ephemeralLow returns the first port of the kernel's ephemeral range, or 0
// if it is unknown (not Linux).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}

func need(t testing.TB, bin string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/"} {
		if p, err := exec.LookPath(dir + bin); err == nil {
			return p
		}
	}
	if os.Getenv("EDGEPROXY_SKIP_SERVERS") == "1" {
		t.Skipf("%s not installed and EDGEPROXY_SKIP_SERVERS=1", bin)
	}
	t.Fatalf("%s is not installed: run .ci/run (or apt-get install redis-server memcached)", bin)
	return ""
}

// Redis starts redis-server without persistence on a free port.
func Redis(t testing.TB) *Server {
	t.Helper()
	bin := need(t, "redis-server")
	port := FreePort(t)
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--protected-mode", "no", "--dir", t.TempDir()}
	return start(t, "redis-server", bin, port, args, "Ready to accept connections")
}

// Memcached starts memcached on a free port.
func Memcached(t testing.TB) *Server {
	t.Helper()
	bin := need(t, "memcached")
	port := FreePort(t)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	// memcached prints nothing when ready (-vv would, but it also logs every
	// command, which skews benchmarks): readiness is the socket answering.
	return start(t, "memcached", bin, port, args, "")
}

func start(t testing.TB, name, bin string, port int, args []string, ready string) *Server {
	t.Helper()
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, t: t, name: bin, args: args, ready: ready}
	s.launch(ready)
	t.Cleanup(s.Stop)
	return s
}

// launch starts the process and waits, without sleeping, until it prints its
// ready line or accepts a connection.
func (s *Server) launch(ready string) {
	s.t.Helper()
	cmd := exec.Command(s.name, s.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting %s: %v", s.name, err)
	}
	pw.Close()
	s.cmd = cmd
	found := make(chan bool, 1)
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(pr)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), ready) {
				ok = true
				found <- true
			}
			if !ok && tail.Len() < 4096 {
				tail.WriteString(sc.Text() + "\n")
			}
		}
		if !ok {
			found <- false
		}
	}()
	if ready == "" {
		// No ready line: watch only for an early exit while dialing.
		go func() { <-found }()
	} else {
		s.waitReady(found, &tail)
	}
	s.dialReady()
}

func (s *Server) waitReady(found chan bool, tail *strings.Builder) {
	s.t.Helper()
	select {
	case ok := <-found:
		if !ok {
			s.t.Fatalf("%s exited before it was ready:\n%s", s.name, tail.String())
		}
	case <-time.After(15 * time.Second):
		s.Stop()
		s.t.Fatalf("%s not ready after 15s", s.name)
	}
}

// dialReady polls the socket until it accepts, within a bound.
func (s *Server) dialReady() {
	s.t.Helper()
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if i == 500 {
			s.t.Fatalf("%s: %s refuses connections after 10s: %v", s.name, s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a socket, not synchronising goroutines
	}
}

// Stop kills the process and waits for it. It is safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port after Stop.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.Stop()
	}
	s.launch(s.ready)
}

// Pause stops the process with SIGSTOP: it keeps its socket but answers
// nothing, like a hung server. It returns once every thread of the process
// is stopped, so a request sent after Pause cannot be answered. Resume
// undoes it.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	pid := s.cmd.Process.Pid
	for i := 0; ; i++ {
		if allStopped(pid) {
			return
		}
		if i == 1000 {
			s.t.Fatalf("%s did not stop after SIGSTOP", s.name)
		}
		time.Sleep(time.Millisecond) // polling /proc, not synchronising goroutines
	}
}

// allStopped reports whether every thread of pid is in state T (stopped).
func allStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// pid (comm) state ...: the state follows the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume continues a paused process.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil {
		s.t.Fatalf("%s is not running", s.name)
	}
	if err := syscall.Kill(-s.cmd.Process.Pid, sig); err != nil {
		s.t.Fatalf("signalling %s: %v", s.name, err)
	}
}

// Pid returns the process ID of the running server, for reading its CPU
// time from /proc; 0 while it is stopped.
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// CPU returns the user plus system CPU time the running server used so
// far (utime+stime from /proc/PID/stat), or 0 if it cannot be read (the
// server is stopped, or there is no /proc).
func (s *Server) CPU() time.Duration {
	pid := s.Pid()
	if pid == 0 {
		return 0
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: utime and stime are fields 14 and 15,
	// the 12th and 13th after the command name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100
}

func (s *Server) String() string { return fmt.Sprintf("%s@%s", s.name, s.Addr) }
