package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

var errRequestURICTL = errors.New("proxy: control character in the request URI")

// hasWireBody reports whether req has a body to send, or framing that
// http.Request.Write must work out; writeBodylessRequest serves the rest.
func hasWireBody(req *http.Request) bool {
	return req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 ||
		len(req.TransferEncoding) != 0 || len(req.Trailer) != 0
}

// requestTarget is what the request line and Host of a request are made of,
// checked as http.Transport checks them.
type requestTarget struct {
	method, host, path, query string
	forceQuery                bool // "?" even with an empty query
}

// newRequestTarget works out req's method, Host (req.Host, else the URL's;
// empty if invalid, as req.Write sends it) and request URI, refusing an
// invalid method or a control character in the URI.
func newRequestTarget(req *http.Request) (requestTarget, error) {
	rt := requestTarget{method: req.Method, host: req.Host, forceQuery: req.URL.ForceQuery}
	if rt.method == "" {
		rt.method = http.MethodGet
	}
	if !validMethod(rt.method) {
		return rt, fmt.Errorf("proxy: invalid method %q", rt.method)
	}
	if rt.host == "" {
		rt.host = req.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(rt.host)
	if err != nil {
		return rt, fmt.Errorf("proxy: host %q: %w", rt.host, err)
	}
	if !httpguts.ValidHostHeader(host) {
		host = "" // an empty Host is valid, a smuggled one is not
	}
	rt.host = removeZone(host)
	u := req.URL
	rt.path, rt.query = u.Opaque, u.RawQuery
	switch {
	case rt.path == "":
		rt.path = u.EscapedPath()
		if rt.path == "" {
			rt.path = "/"
		}
	case strings.HasPrefix(rt.path, "//"):
		rt.path = u.Scheme + ":" + rt.path
	}
	if hasCTL(rt.path) || hasCTL(rt.query) {
		return rt, errRequestURICTL
	}
	return rt, nil
}

// writeBodylessRequest writes the header of req, which has no body, to
// rt, as req.Write would but without its allocations (issue #13): the
// request line, Host, User-Agent (Go's default unless the header has one,
// even empty), Content-Length: 0 for POST, PUT and PATCH, Connection: close
// if req.Close, then req.Header without the fields the framing owns. Unlike
// req.Write it does not sort the header. The header must have passed
// validHeader. Errors are the writer's, sticky in it.
func writeBodylessRequest(w *bufio.Writer, req *http.Request, rt *requestTarget) {
	w.WriteString(rt.method)
	w.WriteByte(' ')
	w.WriteString(rt.path)
	if rt.forceQuery || rt.query != "" {
		w.WriteByte('?')
		w.WriteString(rt.query)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(rt.host)
	w.WriteString("\r\n")
	if ua, ok := req.Header["User-Agent"]; !ok {
		w.WriteString("User-Agent: Go-http-client/1.1\r\n")
	} else if len(ua) > 0 {
		if v := textproto.TrimString(ua[0]); v != "" {
			writeField(w, "User-Agent", v)
		}
	}
	switch rt.method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		w.WriteString("Content-Length: 0\r\n") // many servers expect one
	}
	if req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		w.WriteString("Connection: close\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			writeField(w, k, textproto.TrimString(v))
		}
	}
	w.WriteString("\r\n")
}

func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(v)
	w.WriteString("\r\n")
}

func validMethod(m string) bool {
	return m != "" && strings.IndexFunc(m, func(r rune) bool { return !httpguts.IsTokenRune(r) }) < 0
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

// removeZone removes an IPv6 zone from host ("[fe80::1%en0]:80"), as
// RFC 6874 asks of a client and req.Write does.
func removeZone(host string) string {
	if !strings.HasPrefix(host, "[") {
		return host
	}
	i := strings.LastIndex(host, "]")
	if i < 0 {
		return host
	}
	j := strings.LastIndex(host[:i], "%")
	if j < 0 {
		return host
	}
	return host[:j] + host[i:]
}
