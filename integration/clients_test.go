package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var versions = []uint16{tls.VersionTLS12, tls.VersionTLS13}

func versionName(v uint16) string {
	return "TLS" + versionLabel(v)
}

// versionLabel is the version label of edgeproxy's metrics.
func versionLabel(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// goClient is a returning client using Go's crypto/tls: one version, its own
// session cache.
type goClient struct {
	addr    string
	version uint16
	conf    *tls.Config
}

func newGoClient(addr string, version uint16) *goClient {
	return &goClient{addr: addr, version: version, conf: &tls.Config{
		ServerName:         "localhost",
		RootCAs:            certPool,
		MinVersion:         version,
		MaxVersion:         version,
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}}
}

// connect makes one connection: handshake, then one HTTP request and its
// response (reading it also takes in a TLS 1.3 ticket, which the server
// sends right after the handshake), then close. It reports whether the
// handshake resumed a session. A failed handshake's error starts with
// "handshake".
func (c *goClient) connect() (resumed bool, err error) {
	raw, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return false, fmt.Errorf("handshake: dialing: %w", err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(15 * time.Second))
	conn := tls.Client(raw, c.conf)
	if err := conn.Handshake(); err != nil {
		return false, fmt.Errorf("handshake: %w", err)
	}
	st := conn.ConnectionState()
	if st.Version != c.version {
		return st.DidResume, fmt.Errorf("negotiated %s, want %s", versionName(st.Version), versionName(c.version))
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return st.DidResume, fmt.Errorf("request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return st.DidResume, fmt.Errorf("response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st.DidResume, fmt.Errorf("response body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upstream") != "app" {
		return st.DidResume, fmt.Errorf("response: %s from %q: %.200s", resp.Status, resp.Header.Get("X-Upstream"), body)
	}
	return st.DidResume, nil
}

// tally counts one client's connections. The first connection of a client
// has no session to resume; it counts only if it fails.
type tally struct {
	conns   int // returning connections (all but the first)
	resumed int
	failed  int      // any connection that did not complete
	errs    []string // the first few failures
}

func (tl *tally) add(first, resumed bool, err error) {
	if err != nil {
		tl.failed++
		if len(tl.errs) < 5 {
			tl.errs = append(tl.errs, err.Error())
		}
		return
	}
	if first {
		return
	}
	tl.conns++
	if resumed {
		tl.resumed++
	}
}

func (tl tally) String() string {
	return fmt.Sprintf("%d/%d resumed, %d failed", tl.resumed, tl.conns, tl.failed)
}

// reconnect makes 1+n connections with c and tallies them.
func (c *goClient) reconnect(n int) tally {
	var tl tally
	for i := 0; i <= n; i++ {
		resumed, err := c.connect()
		tl.add(i == 0, resumed, err)
	}
	return tl
}

// witnesses are returning clients that got their sessions at one moment and
// come back once at another: did the sessions survive what happened in
// between?
type witnesses []*goClient

// newWitnesses makes n clients of version that each complete one full
// handshake now.
func newWitnesses(t *testing.T, addr string, version uint16, n int) witnesses {
	t.Helper()
	var ws witnesses
	for range n {
		c := newGoClient(addr, version)
		if resumed, err := c.connect(); err != nil || resumed {
			t.Fatalf("witness %s: first connection: resumed=%v err=%v", versionName(version), resumed, err)
		}
		ws = append(ws, c)
	}
	return ws
}

// comeBack connects every witness once and tallies the connections.
func (ws witnesses) comeBack() tally {
	var tl tally
	for _, c := range ws {
		resumed, err := c.connect()
		tl.add(false, resumed, err)
	}
	return tl
}

// traffic runs one Go client per TLS version, each reconnecting in a loop
// through HAProxy until finish.
type traffic struct {
	// gate is held for reading by every connection in flight; between
	// takes it for writing, so a test can act between connections.
	gate    sync.RWMutex
	stop    chan struct{}
	wg      sync.WaitGroup
	clients []*trafficClient
}

type trafficClient struct {
	c     *goClient
	count atomic.Int64 // connections made, for waitFor
	// mu protects tl.
	mu sync.Mutex
	tl tally
}

// startTraffic starts the clients; they stop at finish, or when the test
// ends.
func startTraffic(t *testing.T, addr string) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	for _, v := range versions {
		tc := &trafficClient{c: newGoClient(addr, v)}
		tr.clients = append(tr.clients, tc)
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for first := true; ; first = false {
				select {
				case <-tr.stop:
					return
				default:
				}
				tr.gate.RLock()
				resumed, err := tc.c.connect()
				tr.gate.RUnlock()
				tc.mu.Lock()
				tc.tl.add(first, resumed, err)
				tc.mu.Unlock()
				tc.count.Add(1)
				// Leave some CPU to the nodes and to other packages' tests.
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(tr.halt)
	return tr
}

// between runs f while no connection is in flight: it waits for the
// connections in progress and holds new ones until f returns.
func (tr *traffic) between(f func()) {
	tr.gate.Lock()
	defer tr.gate.Unlock()
	f()
}

// waitFor waits until every client has made n more connections.
func (tr *traffic) waitFor(t *testing.T, n int) {
	t.Helper()
	start := make([]int64, len(tr.clients))
	for i, tc := range tr.clients {
		start[i] = tc.count.Load()
	}
	waitUntil(t, 60*time.Second, fmt.Sprintf("%d more connections per client", n), func() (bool, string) {
		for i, tc := range tr.clients {
			if done := tc.count.Load() - start[i]; done < int64(n) {
				return false, fmt.Sprintf("%s client made %d", versionName(tc.c.version), done)
			}
		}
		return true, ""
	})
}

func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// finish stops the clients and returns each one's tally by version.
func (tr *traffic) finish() map[uint16]tally {
	tr.halt()
	out := map[uint16]tally{}
	for _, tc := range tr.clients {
		tc.mu.Lock()
		out[tc.c.version] = tc.tl
		tc.mu.Unlock()
	}
	return out
}

// opensslResult is what one openssl s_client run printed.
type opensslResult struct {
	handshakes []string // "New" or "Reused", one per connection
	out        string
}

var opensslHandshake = regexp.MustCompile(`(?m)^(New|Reused), (TLSv1\.[23]),`)

// opensslArgs are the arguments every s_client run gets: verify the
// certificate strictly, so a wrong server fails loudly.
func opensslArgs(addr string, version uint16) []string {
	args := []string{"s_client", "-connect", addr, "-servername", "localhost",
		"-CAfile", certFile, "-verify_return_error", "-verify_hostname", "localhost"}
	if version == tls.VersionTLS13 {
		return append(args, "-tls1_3")
	}
	return append(args, "-tls1_2")
}

// runOpenSSL runs openssl with stdin and checks that it exited cleanly and
// that every handshake it printed used version.
func runOpenSSL(t *testing.T, version uint16, stdin string, args ...string) (opensslResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, need(t, "openssl"), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := opensslResult{out: out.String()}
	for _, m := range opensslHandshake.FindAllStringSubmatch(res.out, -1) {
		if want := "TLSv" + versionLabel(version); m[2] != want {
			return res, fmt.Errorf("openssl negotiated %s, want %s", m[2], want)
		}
		res.handshakes = append(res.handshakes, m[1])
	}
	if err != nil {
		return res, fmt.Errorf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return res, nil
}

// opensslSession is the classic check: one s_client process per connection,
// the session carried in a file. With sessIn empty it makes a new session
// and writes it to sessOut; the HTTP request piped in and -ign_eof make it
// read the response, so a TLS 1.3 ticket has arrived before it exits. It
// returns "New" or "Reused".
func opensslSession(t *testing.T, addr string, version uint16, sessIn, sessOut string) (string, error) {
	t.Helper()
	args := append(opensslArgs(addr, version), "-ign_eof")
	if sessIn != "" {
		args = append(args, "-sess_in", sessIn)
	}
	if sessOut != "" {
		args = append(args, "-sess_out", sessOut)
	}
	res, err := runOpenSSL(t, version, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", args...)
	if err != nil {
		return "", fmt.Errorf("%v\n%s", err, res.out)
	}
	if len(res.handshakes) != 1 {
		return "", fmt.Errorf("want one handshake, openssl printed %v:\n%s", res.handshakes, res.out)
	}
	if !strings.Contains(res.out, "HTTP/1.0 200 OK") {
		return "", fmt.Errorf("no 200 response:\n%s", res.out)
	}
	return res.handshakes[0], nil
}

// opensslReconnect runs `openssl s_client -reconnect` (TLS 1.2): a new
// connection, then five reconnects offering its session, each a new TCP
// connection that HAProxy balances. It returns the handshakes printed.
func opensslReconnect(t *testing.T, addr string) ([]string, error) {
	t.Helper()
	args := append(opensslArgs(addr, tls.VersionTLS12), "-reconnect")
	res, err := runOpenSSL(t, tls.VersionTLS12, "", args...)
	if err != nil {
		return nil, fmt.Errorf("%v\n%s", err, res.out)
	}
	if len(res.handshakes) != 6 || res.handshakes[0] != "New" {
		return nil, fmt.Errorf("want New and 5 reconnects, openssl printed %v:\n%s", res.handshakes, res.out)
	}
	return res.handshakes[1:], nil
}
