package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/edgeproxy/edgeproxy/internal/demoapp"
)

// PROXY protocol behind HAProxy (#14): HAProxy in mode tcp sends a PROXY v2
// header on every connection to a node, and the nodes trust HAProxy's
// address (127.0.0.1) only. A client bound to 127.0.0.2 must appear as
// 127.0.0.2 to the upstream and in the access log, not as HAProxy.

// proxyClientAddr is the client's own address; HAProxy connects to the
// nodes from 127.0.0.1.
const proxyClientAddr = "127.0.0.2"

func TestProxyProtocolThroughHAProxy(t *testing.T) {
	c := newClusterWith(t, modes[0], clusterOptions{
		accessLog:     true,
		nodeYAML:      "proxy_protocol: {trusted: [127.0.0.1/32]}",
		serverOptions: "send-proxy-v2",
	})
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(proxyClientAddr)}, Timeout: 5 * time.Second}
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext:       d.DialContext,
		TLSClientConfig:   &tls.Config{ServerName: "localhost", RootCAs: certPool},
		DisableKeepAlives: true, // a connection each: round robin reaches every node
	}}
	// One request per node, then one more.
	for i := range nodeCount + 1 {
		resp, err := client.Get("https://" + c.lb.addr + fmt.Sprintf("/pp/%d", i))
		if err != nil {
			t.Fatalf("request %d through HAProxy: %v", i, err)
		}
		var reply demoapp.Reply
		err = json.NewDecoder(resp.Body).Decode(&reply)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s, %v", i, resp.Status, err)
		}
		if reply.ForwardedFor != proxyClientAddr {
			t.Errorf("request %d: upstream saw X-Forwarded-For %q, want the client %s", i, reply.ForwardedFor, proxyClientAddr)
		}
	}
	// Every node logged its request with the client's address.
	for _, n := range c.nodes {
		// The entry is written once the response is: poll for it.
		waitUntil(t, 10*time.Second, n.name+": an access log entry", func() (bool, string) {
			return len(accessLogRemotes(t, n.logPath, "/pp/")) > 0, "none yet"
		})
		for _, r := range accessLogRemotes(t, n.logPath, "/pp/") {
			if host, _, _ := net.SplitHostPort(r); host != proxyClientAddr {
				t.Errorf("%s: access log remote %q, want %s:port", n.name, r, proxyClientAddr)
			}
		}
	}
	ok := 0.0
	for _, n := range c.nodes {
		ok += c.metrics(t, n).sum("edgeproxy_proxy_protocol_total", "result", "ok")
	}
	if ok < nodeCount+1 {
		t.Errorf("edgeproxy_proxy_protocol_total{result=\"ok\"} = %v over the nodes, want at least %d", ok, nodeCount+1)
	}

	// A PROXY header sent to a node by anyone but HAProxy is refused.
	n := c.nodes[0]
	before := c.metrics(t, n).sum("edgeproxy_proxy_protocol_total", "result", "untrusted")
	if err := forgedProxyHandshake(n.addr); err == nil {
		t.Fatalf("%s served a PROXY header from the untrusted 127.0.0.3", n.name)
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s left a forged PROXY header's connection open: %v", n.name, err)
	}
	if after := c.metrics(t, n).sum("edgeproxy_proxy_protocol_total", "result", "untrusted"); after != before+1 {
		t.Errorf("%s: edgeproxy_proxy_protocol_total{result=\"untrusted\"} = %v, want %v", n.name, after, before+1)
	}
}

// forgedProxyHandshake connects from 127.0.0.3 straight to a node, claims
// to be 198.51.100.1 in a PROXY v2 header, and tries a TLS handshake.
func forgedProxyHandshake(addr string) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("dialing: %w", err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(15 * time.Second))
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1234}, raw.RemoteAddr())
	if _, err := h.WriteTo(raw); err != nil {
		return err
	}
	tc := tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: certPool})
	return tc.HandshakeContext(context.Background())
}

// accessLogRemotes returns the remote field of the JSON access log entries
// in a node's log whose path starts with prefix.
func accessLogRemotes(t *testing.T, logPath, prefix string) []string {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range bytes.Split(data, []byte("\n")) {
		var e struct {
			Msg    string `json:"msg"`
			Path   string `json:"path"`
			Remote string `json:"remote"`
		}
		if json.Unmarshal(line, &e) != nil || e.Msg != "request" || !strings.HasPrefix(e.Path, prefix) {
			continue
		}
		out = append(out, e.Remote)
	}
	return out
}
