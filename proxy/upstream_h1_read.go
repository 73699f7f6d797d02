package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// h1Response is a response read by parseBufferedResponse, allocated in one
// piece with its body readers and, for a header of up to len(vals) lines
// (nginx sends 5 to 8), the backing array of its values.
type h1Response struct {
	resp  http.Response
	fixed fixedBody // resp.Body's source when it has one
	body  h1Body    // what roundTrip hands out as resp.Body
	vals  [6]string
}

// parseBufferedResponse reads the common response, whole in br's buffer,
// in fewer allocations than http.ReadResponse (9 of them, issue #13):
// "HTTP/1.1", a status of 200-599 other than 204 and 304, header lines
// ending in CRLF that http.ReadResponse takes as they are, one
// Content-Length and no "Connection: close", to a request other than HEAD
// and CONNECT. The header's
// keys and values are substrings of one string. For anything else it
// returns nil and consumes nothing, and the caller reads with
// http.ReadResponse; what it returns is what http.ReadResponse would
// (FuzzParseBufferedResponse).
func parseBufferedResponse(br *bufio.Reader, req *http.Request) *h1Response {
	if req.Method == http.MethodHead || req.Method == http.MethodConnect {
		return nil
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil
	}
	const proto = "HTTP/1.1 "
	if !bytes.HasPrefix(buf, []byte(proto)) || end < len(proto)+3 {
		return nil
	}
	nl := bytes.IndexByte(buf, '\n')
	if nl-1 < len(proto)+3 || nl+1 > end {
		return nil // no header, so no Content-Length either
	}
	// Status line: "HTTP/1.1 ", three digits, then the end of the line or
	// a space and a reason of any bytes but CR.
	code := 0
	for _, c := range buf[len(proto) : len(proto)+3] {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil
	}
	if rest := buf[len(proto)+3 : nl-1]; len(rest) > 0 && rest[0] != ' ' || bytes.IndexByte(rest, '\r') >= 0 {
		return nil
	}
	if buf[nl-1] != '\r' {
		return nil
	}
	lines := bytes.Count(buf[nl+1:end+2], []byte("\n"))
	block := string(buf[:end+2]) // every string of the response is cut from it
	r := &h1Response{}
	r.resp = http.Response{
		Status: block[len(proto) : nl-1], StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, lines), ContentLength: -1, Request: req,
	}
	vals := r.vals[:min(lines, len(r.vals))]
	if lines > len(r.vals) {
		vals = make([]string, lines)
	}
	for s := block[nl+1:]; s != ""; {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return nil // a bare LF
		}
		line = line[:len(line)-1]
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || !httpguts.ValidHeaderFieldName(line[:colon]) {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' || len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
			return nil // obsolete line folding
		}
		v := line[colon+1:]
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
				return nil
			}
		}
		key := textproto.CanonicalMIMEHeaderKey(line[:colon])
		switch key {
		case "Transfer-Encoding", "Trailer", "Pragma":
			return nil // framing or header rewrites of http.ReadResponse's own
		case "Content-Length":
			if r.resp.ContentLength >= 0 {
				return nil
			}
			n, err := strconv.ParseUint(textproto.TrimString(v), 10, 63) // as net/http parses it
			if err != nil {
				return nil
			}
			r.resp.ContentLength = int64(n)
		}
		vv := r.resp.Header[key]
		if vv == nil {
			vv, vals = vals[:1:1], vals[1:]
			vv[0] = textproto.TrimString(v)
		} else {
			vv = append(vv, textproto.TrimString(v))
		}
		r.resp.Header[key] = vv
	}
	if r.resp.ContentLength < 0 {
		return nil // read to EOF: the connection closes after it
	}
	if httpguts.HeaderValuesContainsToken(r.resp.Header["Connection"], "close") {
		return nil // http.ReadResponse deletes it and sets Close
	}
	br.Discard(end + 4)
	if r.resp.ContentLength == 0 {
		r.resp.Body = http.NoBody
	} else {
		r.fixed = fixedBody{br: br, n: r.resp.ContentLength}
		r.resp.Body = &r.fixed
	}
	return r
}

// fixedBody reads a body of known length from the connection's buffered
// reader, as http.ReadResponse's body does: io.EOF with the last byte,
// io.ErrUnexpectedEOF if the connection ends before it.
type fixedBody struct {
	br *bufio.Reader
	n  int64 // bytes left
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: h1Body ends the exchange.
func (b *fixedBody) Close() error { return nil }
