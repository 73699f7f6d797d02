package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestForwardMatchesReverseProxy proxies the same raw HTTP/1.1 requests
// through a Handler and through httputil.ReverseProxy with the rewrite the
// Handler made before it forwarded on its own (issue #13), to one upstream,
// and requires the same bytes both ways: what the upstream received
// (request line and every header) and what the client received (1xx
// responses, status, header, body, trailers), for hop-by-hop headers and
// those that Connection lists, "Te: trailers", forwarding headers sent by a
// client, a missing User-Agent, query parameters to drop, announced and
// unannounced trailers, Early Hints, event streams and bodies of unknown
// length.
func TestForwardMatchesReverseProxy(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var seen strings.Builder
		fmt.Fprintf(&seen, "%s %s Host=%s\n", r.Method, r.RequestURI, r.Host)
		for _, k := range slices.Sorted(mapKeys(r.Header)) {
			fmt.Fprintf(&seen, "%s=%q\n", k, r.Header[k])
		}
		h := w.Header()
		switch r.URL.Path {
		case "/trailers":
			h.Set("Trailer", "X-Announced")
			io.WriteString(w, seen.String())
			h.Set("X-Announced", "a")
			h.Set(http.TrailerPrefix+"X-Unannounced", "u")
		case "/announced":
			h.Set("Trailer", "X-Announced, X-Second")
			io.WriteString(w, seen.String())
			h.Set("X-Announced", "a")
			h.Set("X-Second", "b")
		case "/sse":
			h.Set("Content-Type", "Text/Event-Stream; charset=utf-8")
			io.WriteString(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, seen.String())
		case "/nolength":
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, seen.String())
		case "/hop":
			h.Set("Connection", "X-Bar, keep-alive") // with "close" Go's server would write "Connection: close" alone
			h.Set("X-Bar", "hop")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Proxy-Connection", "keep-alive")
			h.Set("Proxy-Authenticate", "Basic")
			h.Set("X-Kept", "yes")
			h.Set("Content-Length", fmt.Sprint(seen.Len()))
			io.WriteString(w, seen.String())
		case "/early":
			h.Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			h.Set("Content-Length", fmt.Sprint(seen.Len()))
			h.Add("Set-Cookie", "a=1")
			h.Add("Set-Cookie", "b=2")
			io.WriteString(w, seen.String())
		default:
			h.Set("Content-Type", "text/plain")
			h.Set("Content-Length", fmt.Sprint(seen.Len()))
			io.WriteString(w, seen.String())
		}
	}))
	t.Cleanup(upstream.Close)

	ours := httptest.NewServer(newTestHandler(t, HandlerConfig{
		Routes:       []RouteConfig{{Upstreams: []string{upstream.URL}}},
		ProxyHeaders: []string{"X-TLS-Session-ID"},
	}))
	t.Cleanup(ours.Close)
	target, _ := url.Parse(upstream.URL)
	policy := newHeaderPolicy([]string{"X-TLS-Session-ID"}, false)
	ref := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { // rewrite as it was
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			policy.clean(pr.Out.Header)
			pr.SetXForwarded()
			if ip := pr.Out.Header.Get("X-Forwarded-For"); ip != "" {
				pr.Out.Header["X-Real-Ip"] = []string{ip}
			}
		},
		Transport:  newUpstreamTransport(&RouteConfig{}, nil),
		BufferPool: copyBuffers,
	})
	t.Cleanup(ref.Close)

	header := "Host: app.example\r\nUser-Agent: ua\r\nAccept: */*\r\n"
	requests := []struct{ name, raw string }{
		{"plain", "GET /a?x=1 HTTP/1.1\r\n" + header + "\r\n"},
		{"hop-by-hop and listed", "GET /b HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Foo, x-tls-session-id\r\nX-Foo: 1\r\nKeep-Alive: 300\r\n" +
			"Proxy-Authorization: Basic x\r\nProxy-Connection: keep-alive\r\nTe: trailers, deflate\r\nTrailer: X-T\r\nX-Other: 2\r\n\r\n"},
		{"forwarding headers", "GET /c HTTP/1.1\r\n" + header + "Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n" +
			"X-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nX-TLS-Session-ID: forged\r\nX_Custom: drop\r\n\r\n"},
		{"no User-Agent, bad query", "GET /d?a=1;b=2&c=%zz&d=4 HTTP/1.1\r\nHost: app.example\r\n\r\n"},
		{"repeated values", "GET /e HTTP/1.1\r\n" + header + "X-Multi: 1\r\nX-Multi: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"},
		{"trailers", "GET /trailers HTTP/1.1\r\n" + header + "Te: trailers\r\n\r\n"},
		{"announced trailers", "GET /announced HTTP/1.1\r\n" + header + "\r\n"},
		{"event stream", "GET /sse HTTP/1.1\r\n" + header + "\r\n"},
		{"unknown length", "GET /nolength HTTP/1.1\r\n" + header + "\r\n"},
		{"response hop-by-hop", "GET /hop HTTP/1.1\r\n" + header + "\r\n"},
		{"early hints", "GET /early HTTP/1.1\r\n" + header + "\r\n"},
		{"POST with body", "POST /f HTTP/1.1\r\n" + header + "Content-Length: 5\r\nExpect: \r\n\r\nhello"},
	}
	for _, tt := range requests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := rawExchange(t, ref.Listener.Addr().String(), tt.raw)
			got := rawExchange(t, ours.Listener.Addr().String(), tt.raw)
			if got != want {
				t.Errorf("through the Handler:\n%s\nthrough httputil.ReverseProxy:\n%s", got, want)
			}
		})
	}
}

// rawExchange sends one raw HTTP/1.1 request to addr and returns every
// response to it (1xx included) as text: status, sorted header without
// Date, body, trailers.
func rawExchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang fails the test, not CI
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out strings.Builder
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the response to %q: %v", raw, err)
		}
		resp.Header.Del("Date")
		fmt.Fprintf(&out, "%s %v\n", resp.Status, resp.TransferEncoding)
		for _, k := range slices.Sorted(mapKeys(resp.Header)) {
			fmt.Fprintf(&out, "%s=%q\n", k, resp.Header[k])
		}
		if resp.StatusCode < 200 {
			continue
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the body of the response to %q: %v", raw, err)
		}
		fmt.Fprintf(&out, "\n%s\ntrailer:\n", b)
		for _, k := range slices.Sorted(mapKeys(resp.Trailer)) {
			fmt.Fprintf(&out, "%s=%q\n", k, resp.Trailer[k])
		}
		return out.String()
	}
}

func mapKeys(h http.Header) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}
}

// FuzzCanonicalIs checks canonicalIs against textproto: it must find
// exactly the keys that http.Header.Del(name) deletes.
func FuzzCanonicalIs(f *testing.F) {
	f.Add("keep-alive", "Keep-Alive")
	f.Add("X-FOO", "X-Foo")
	f.Add("x-foo", "x-foo")
	f.Add("foo bar", "foo bar")
	f.Add("Foo Bar", "Foo bar")
	f.Add("x_y", "X_y")
	f.Add("\u212aeep-alive", "Keep-Alive")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, name, k string) {
		if got, want := canonicalIs(name, k), textproto.CanonicalMIMEHeaderKey(name) == k; got != want {
			t.Fatalf("canonicalIs(%q, %q) = %v; CanonicalMIMEHeaderKey gives %q", name, k, got, textproto.CanonicalMIMEHeaderKey(name))
		}
	})
}
