package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	headerSize                int  // bytes of the header's fields on the wire (validHeader)
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

// maxWireSize bounds what writeBodylessRequest writes: the fields beyond
// the header's own (request line, Host, User-Agent, Content-Length,
// Connection) take less than 128 bytes more than their values.
func (rt *requestTarget) maxWireSize() int {
	return rt.headerSize + len(rt.method) + len(rt.path) + len(rt.query) + len(rt.host) + 128
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

// bodyWriter sends a request with a body on its own goroutine while the
// response is read, and starts the response header timeout once it is
// done. finish learns from it whether the request went out whole (wait).
type bodyWriter struct {
	c    *h1Conn
	req  http.Request // the caller's, with body as its Body
	body sentBody
	done chan error // the write's result, sent once

	// bodyRead is set once the body gave everything it declared: what is
	// left of the write depends on the upstream alone, not on the client.
	bodyRead atomic.Bool

	// mu protects header and err: the header deadline is set only while
	// no response header came, and a write error is the cause of a failed
	// exchange only if it came before the reader gave up.
	mu     sync.Mutex
	header bool
	err    error
}

// newBodyWriter prepares the write of req, whose Body is not nil nor
// http.NoBody, on c. req itself is not changed.
func newBodyWriter(c *h1Conn, req *http.Request) *bodyWriter {
	w := &bodyWriter{c: c, req: *req, done: make(chan error, 1)}
	w.body = sentBody{rc: req.Body, w: w, left: req.ContentLength}
	if len(req.TransferEncoding) > 0 {
		w.body.left = 0 // chunked whatever the length says: done at io.EOF
	}
	w.req.Body = &w.body
	return w
}

func (w *bodyWriter) write() {
	err := w.req.Write(w.c.bw)
	if err == nil {
		err = w.c.bw.Flush()
	}
	w.mu.Lock()
	w.err = err
	if err == nil && !w.header {
		w.c.nc.SetReadDeadline(time.Now().Add(w.c.pool.cfg.responseHeader))
	}
	w.mu.Unlock()
	if err != nil {
		w.c.nc.Close() // the reader sees it
	}
	w.done <- err
}

// maxWriteWaitBeforeReuse bounds how long finish waits for the last write
// of a body the upstream has answered (net/http's Transport waits as long,
// maxWriteWaitBeforeConnReuse): an upstream that answered without taking
// all of it costs the client that much, and the connection.
const maxWriteWaitBeforeReuse = 50 * time.Millisecond

// wait is finish's: it reports whether the connection may carry another
// request, given that the response allows it (reuse). It waits for the
// write only if reuse and the body was read whole, and then for at most
// maxWriteWaitBeforeReuse. A write that failed or did not end in time, or
// a body not read whole, is a request cut short: false.
func (w *bodyWriter) wait(reuse bool) bool {
	if !reuse || !w.bodyRead.Load() {
		return false
	}
	var err error
	select {
	case err = <-w.done:
	default: // still writing: rare, and the only case with a deadline
		w.c.nc.SetWriteDeadline(time.Now().Add(maxWriteWaitBeforeReuse))
		err = <-w.done
		w.c.nc.SetWriteDeadline(time.Time{})
	}
	return err == nil
}

// abandon stops the exchange after the response failed: it closes the
// connection, waits for the write to end (it may be reading the client's
// body, as http.Transport's would) and returns its error if that came first.
func (w *bodyWriter) abandon() error {
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	w.c.nc.Close()
	<-w.done
	return err
}

func (w *bodyWriter) gotHeader() {
	w.mu.Lock()
	w.header = true
	w.c.nc.SetReadDeadline(time.Time{})
	w.mu.Unlock()
}

// sentBody is a request body as bodyWriter sends it. It sets the writer's
// bodyRead once it returned io.EOF or, with a Content-Length, that many
// bytes: an upstream that has them all may answer before req.Write reads
// again to check for more.
type sentBody struct {
	rc   io.ReadCloser
	w    *bodyWriter
	left int64 // bytes until the Content-Length; <= 0: unknown or done
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.left > 0 {
		if b.left -= int64(n); b.left <= 0 {
			b.w.bodyRead.Store(true)
		}
	}
	if err == io.EOF {
		b.w.bodyRead.Store(true)
	}
	return n, err
}

func (b *sentBody) Close() error { return b.rc.Close() }
