package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is one child process. It runs in its own process group, is killed
// by the kernel if the test binary dies (Pdeathsig), and appends its output
// to a log file whose tail the harness prints when a test fails.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	err     error         // the exit status; read it only after done
}

// startProc starts bin with args, its output appended to logPath.
func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format("15:04:05.000"), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process itself.
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s has exited: %v", p.name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// kill kills the whole process group and waits for the process. It is safe
// to call more than once and on a nil *proc.
func (p *proc) kill() {
	if p == nil || p.exited() {
		return // never signal a reaped pid: it may belong to someone else now
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// wait waits at most timeout for the process to exit and returns its exit
// status.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.name, timeout)
	}
}

// tail returns about the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitUntil polls cond until it reports true and fails the test after
// timeout with what cond said last. It is for waiting on other processes
// (a port, a health check, a metric); the polling interval is not a
// synchronisation point.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if err := poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// poll is waitUntil returning an error instead of failing the test.
func poll(timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s: %s", timeout, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// need returns the path of an installed binary, or fails the test; with
// EDGEPROXY_SKIP_SERVERS=1 it skips instead (never set in CI).
func need(t testing.TB, bin string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/usr/local/sbin/", "/usr/bin/", "/usr/local/bin/"} {
		if p, err := exec.LookPath(dir + bin); err == nil {
			return p
		}
	}
	if os.Getenv("EDGEPROXY_SKIP_SERVERS") == "1" {
		t.Skipf("%s is not installed and EDGEPROXY_SKIP_SERVERS=1", bin)
	}
	t.Fatalf("%s is not installed: run .ci/run, or apt-get install haproxy openssl redis-server memcached", bin)
	return ""
}
