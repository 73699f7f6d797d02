package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// doneSession is a ConnSession that reports HandshakeDone on a channel.
type doneSession struct{ done chan error }

func (d *doneSession) SessionID() string       { return "" }
func (d *doneSession) HandshakeDone(err error) { d.done <- err }

// TestConnSessionHandshakeDone: the listener tells each connection's
// ConnSession how its handshake ended, once, before any request is served
// on it (#12 commits store writes there).
func TestConnSessionHandshakeDone(t *testing.T) {
	t.Parallel()
	done := make(chan error, 4)
	served := make(chan struct{}, 1)
	s := startServer(t, ServerConfig{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case err := <-done:
				if err != nil {
					http.Error(w, "handshake reported as failed: "+err.Error(), 500)
					return
				}
			default:
				http.Error(w, "request served before HandshakeDone", 500)
				return
			}
			served <- struct{}{}
			io.WriteString(w, "ok")
		}),
		PerConn: func(base *tls.Config) (*tls.Config, ConnSession) {
			return base, &doneSession{done: done}
		},
	})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	resp, err := c.Get("https://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("completed handshake: %d %s", resp.StatusCode, body)
	}
	<-served

	// A handshake that fails (no shared cipher) is reported with its error.
	err = testserver.Handshake(t, s.Addr().String(), &tls.Config{
		InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA},
	})
	if err == nil {
		t.Fatal("handshake with no shared cipher succeeded")
	}
	if herr := <-done; herr == nil {
		t.Fatal("a failed handshake was reported to its ConnSession as completed")
	}
}

// TestBaseConfigNeverResumes: without PerConn, a client that kept its
// session gets a full handshake again: the base configuration from
// NewTLSConfig has no session hooks, so crypto/tls's own ticket keys are
// never used.
func TestBaseConfigNeverResumes(t *testing.T) {
	t.Parallel()
	s := startServer(t, ServerConfig{Handler: okHandler()})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cli := &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		for i := range 2 {
			c, err := tls.Dial("tcp", s.Addr().String(), cli)
			if err != nil {
				t.Fatal(err)
			}
			// Read the response to a request, and with it any TLS 1.3
			// ticket sent after the handshake.
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			io.ReadAll(c)
			resumed := c.ConnectionState().DidResume
			c.Close()
			if resumed {
				t.Fatalf("TLS %s connection %d resumed through the base configuration", VersionName(v), i+1)
			}
		}
	}
}
