package proxy

import (
	"bufio"
	"bytes"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"testing"
)

// FuzzWriteBodylessRequest checks writeBodylessRequest against req.Write:
// for any request the pool would send, both are refused, or both parse
// back (http.ReadRequest) to the same method, request URI, Host and header.
func FuzzWriteBodylessRequest(f *testing.F) {
	f.Add("GET", "http://10.0.0.1:8080/a%20b/c?q=1&r=%2F", "example.com", "X-Forwarded-For", "192.0.2.1", "")
	f.Add("POST", "http://h/", "", "User-Agent", "", "")
	f.Add("DELETE", "http://[fe80::1%25en0]:80/x?", "[fe80::1%en0]:80", "Accept", " */* ", "ua")
	f.Add("OPTIONS", "http://h/\x01", "bad host\r\n", "X", "a\tb", "")
	f.Add("GET", "http://bücher.example/", "bücher.example", "Connection", "keep-alive", "close")
	f.Add("PATCH", "http://h//x", "h", "", "", "")
	f.Add("PUT", "http://h/?", "h:80", "Content-Length", "5", "")
	f.Fuzz(func(t *testing.T, method, target, host, key, value, flags string) {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return
		}
		h := http.Header{}
		if key != "" {
			h[key] = []string{value}
		}
		if flags == "ua" {
			delete(h, "User-Agent")
		}
		req := &http.Request{Method: method, URL: u, Host: host, Header: h, Close: flags == "close"}
		rt, err := newRequestTarget(req)
		if err == nil {
			rt.headerSize, err = validHeader(req.Header)
		}
		var want bytes.Buffer
		wantErr := req.Write(&want)
		if err != nil {
			return // refused before a connection is taken; req.Write is laxer
		}
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		writeBodylessRequest(bw, req, &rt)
		bw.Flush()
		if got.Len() > rt.maxWireSize() {
			t.Fatalf("wrote %d bytes, more than maxWireSize %d: %q", got.Len(), rt.maxWireSize(), got.String())
		}
		if wantErr != nil {
			t.Fatalf("req.Write refused %q (%v), writeBodylessRequest wrote %q", target, wantErr, got.String())
		}
		gs, ws := got.String(), want.String()
		g, gerr := http.ReadRequest(bufio.NewReader(&got))
		w, werr := http.ReadRequest(bufio.NewReader(&want))
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("parsing back: %v for %q, req.Write's: %v for %q", gerr, gs, werr, ws)
		}
		if gerr != nil {
			return
		}
		if g.Method != w.Method || g.RequestURI != w.RequestURI || g.Host != w.Host || g.ContentLength != w.ContentLength || g.Close != w.Close {
			t.Fatalf("got %q, req.Write wrote %q", gs, ws)
		}
		if !maps.EqualFunc(g.Header, w.Header, slices.Equal) {
			t.Fatalf("header %v, req.Write's %v (%q)", g.Header, w.Header, ws)
		}
	})
}
