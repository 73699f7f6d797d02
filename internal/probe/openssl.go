package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// probeOpenSSL fills in what Go's client cannot see: the lifetime hint and,
// for TLS 1.2, session-ID resumption.
func probeOpenSSL(ctx context.Context, cfg *Config, openssl string, v uint16, vr *VersionReport) {
	if openssl == "" {
		why := "openssl is not installed"
		if cfg.NoOpenSSL {
			why = "openssl was not used"
		}
		vr.Lifetime = Lifetime{Note: "not observable: crypto/tls does not expose it, and " + why}
		if v == tls.VersionTLS12 {
			vr.SessionID = &SessionID{Note: "not tested: Go's TLS client cannot resume by session ID alone, and " + why}
		}
		return
	}
	vr.Lifetime = lifetimeHint(ctx, cfg, openssl, v)
	if v == tls.VersionTLS12 {
		vr.SessionID = sessionIDTest(ctx, cfg, openssl)
	}
}

// sClientArgs are the s_client arguments shared by every run.
func sClientArgs(cfg *Config, v uint16) []string {
	args := []string{"s_client", "-connect", cfg.Addr}
	if v == tls.VersionTLS13 {
		args = append(args, "-tls1_3")
	} else {
		args = append(args, "-tls1_2")
	}
	if sn := cfg.serverName(); sn != "" {
		args = append(args, "-servername", sn)
	} else {
		args = append(args, "-noservername")
	}
	return args
}

// runOpenSSL runs openssl with empty standard input (s_client then ends
// after the handshake) and returns its combined output.
func runOpenSSL(ctx context.Context, cfg *Config, openssl string, args ...string) (string, error) {
	return runOpenSSLUntil(ctx, cfg, openssl, nil, args...)
}

// opensslTicketGrace is how long s_client's input stays open after its
// TLS 1.3 handshake for tickets to arrive. s_client processes data already
// buffered by OpenSSL only when it shuts down, so this is a bound on
// waiting for tickets sent later (nginx sends them after the client's
// Finished), not a synchronisation: a ticket seen earlier ends it.
const opensslTicketGrace = 300 * time.Millisecond

// runOpenSSLUntil runs openssl. With a nil wait its standard input is
// empty, so s_client ends right after the handshake. Otherwise the input
// stays open until wait, called on each output line, returns true, and at
// most Timeout plus TicketWait. It returns the combined output.
func runOpenSSLUntil(ctx context.Context, cfg *Config, openssl string, wait func(line string, closeIn func()) bool, args ...string) (string, error) {
	timeout := orDefault(cfg.Timeout, DefaultTimeout)
	ticketWait := orDefault(cfg.TicketWait, DefaultTicketWait)
	ctx, cancel := context.WithTimeout(ctx, 2*timeout+5*ticketWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		return "", err
	}
	pw.Close()
	var once sync.Once
	closeIn := func() { once.Do(func() { stdin.Close() }) }
	if wait == nil {
		closeIn()
	}
	bound := time.AfterFunc(timeout+ticketWait, closeIn)
	defer bound.Stop()
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line)
		out.WriteByte('\n')
		if wait != nil && wait(line, closeIn) {
			closeIn()
		}
	}
	closeIn()
	return out.String(), cmd.Wait()
}

// waitTicket returns a wait function for runOpenSSLUntil that ends
// s_client's input once it has printed a ticket received after the
// handshake (TLS 1.3), or opensslTicketGrace after the handshake.
func waitTicket() func(string, func()) bool {
	post := false
	var grace *time.Timer
	return func(line string, closeIn func()) bool {
		if grace == nil && (strings.HasPrefix(line, "New, ") || strings.HasPrefix(line, "Reused, ")) {
			grace = time.AfterFunc(opensslTicketGrace, closeIn)
		}
		if strings.HasPrefix(line, "Post-Handshake New Session Ticket arrived") {
			post = true
		}
		return post && strings.Contains(line, "TLS session ticket:")
	}
}

var (
	hintRE   = regexp.MustCompile(`TLS session ticket lifetime hint: (\d+) \(seconds\)`)
	statusRE = regexp.MustCompile(`(?m)^(New|Reused), `)
	idRE     = regexp.MustCompile(`(?m)^\s*Session-ID: ?([0-9A-Fa-f]*)\s*$`)
)

// lifetimeHint runs `openssl s_client -sess_out F` and reads the hint from
// its output, or from `openssl sess_id -in F -text`.
func lifetimeHint(ctx context.Context, cfg *Config, openssl string, v uint16) Lifetime {
	dir, err := os.MkdirTemp("", "edgeproxy-probe-")
	if err != nil {
		return Lifetime{Note: "not observable: " + err.Error()}
	}
	defer os.RemoveAll(dir)
	sess := filepath.Join(dir, "session.pem")
	var wait func(string, func()) bool
	if v == tls.VersionTLS13 {
		wait = waitTicket()
	}
	out, runErr := runOpenSSLUntil(ctx, cfg, openssl, wait, append(sClientArgs(cfg, v), "-sess_out", sess)...)
	if _, err := os.Stat(sess); err == nil {
		if text, err := runOpenSSL(ctx, cfg, openssl, "sess_id", "-in", sess, "-noout", "-text"); err == nil {
			out += "\n" + text
		}
	}
	l := parseLifetime(out)
	if !l.Observable && runErr != nil && l.Note == "" {
		l.Note = "not observable: openssl s_client failed: " + lastLine(out, runErr)
	}
	return l
}

// parseLifetime reads the lifetime hint from s_client or sess_id output.
func parseLifetime(out string) Lifetime {
	if m := hintRE.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return Lifetime{Observable: true, Seconds: n, Source: "openssl s_client"}
	}
	if strings.Contains(out, "TLS session ticket:") {
		// OpenSSL prints no hint line when the hint is 0.
		return Lifetime{Observable: true, Seconds: 0, Source: "openssl s_client", Note: "0: the server leaves the lifetime unspecified"}
	}
	return Lifetime{Note: "not observable: openssl received no ticket"}
}

// sessionIDTest runs `openssl s_client -tls1_2 -no_ticket -reconnect`:
// resumption by session ID only, which Go's client cannot do.
func sessionIDTest(ctx context.Context, cfg *Config, openssl string) *SessionID {
	out, err := runOpenSSL(ctx, cfg, openssl, append(sClientArgs(cfg, tls.VersionTLS12), "-no_ticket", "-reconnect")...)
	s := parseReconnect(out)
	s.Method = "openssl s_client -no_ticket -reconnect"
	if !s.Tested {
		s.Note = "not tested: openssl s_client failed: " + lastLine(out, err)
	}
	return s
}

// parseReconnect reads the New/Reused lines and session IDs that
// `openssl s_client -reconnect` prints: the first connection, then the
// reconnects.
func parseReconnect(out string) *SessionID {
	s := &SessionID{}
	st := statusRE.FindAllStringSubmatch(out, -1)
	if len(st) == 0 {
		return s
	}
	s.Tested = true
	s.Attempts = len(st) - 1
	for _, m := range st[1:] {
		if m[1] == "Reused" {
			s.Reused++
		}
	}
	for _, m := range idRE.FindAllStringSubmatch(out, -1) {
		if m[1] != "" {
			s.Returned = true
		}
	}
	return s
}

// lastLine returns the last non-empty line of out, or err's text.
func lastLine(out string, err error) string {
	last := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	if last == "" && err != nil {
		return err.Error()
	}
	return last
}
