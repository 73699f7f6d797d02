package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"testing"
	"unsafe"
)

// FuzzParseBufferedResponse checks parseBufferedResponse against
// http.ReadResponse: whatever it reads, http.ReadResponse reads the same
// way (status, protocol, header, length, close, then the same body bytes
// and the same end), and whatever it leaves, it leaves unread.
func FuzzParseBufferedResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", "GET")
	f.Add("HTTP/1.1 404 Not Found\r\ncontent-length:  3 \r\nX-A: 1\r\nx-a:\t2\r\n\r\nabcdef", "POST")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "GET")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: a=b\r\n\r\n", "GET")
	f.Add("HTTP/1.1 200\r\nContent-Length: 1\r\nX: a\r\n b\r\n\r\nx", "GET")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX:\x01\r\n\r\nx", "GET")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "GET")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 1\nX: y\r\n\r\nx", "GET")
	f.Add("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", "GET")
	f.Add("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", "GET")
	f.Add("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\nConnection: x, Close\r\n\r\nok", "GET")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", "GET")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HEAD")
	f.Add("HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n", "GET")
	f.Add("HTTP/1.1 200 OK\r\nfoo_bar: 1\r\nÄ: 2\r\nContent-Length: +2\r\n\r\nok", "GET")
	f.Add("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET")
	f.Add("HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok", "GET")
	f.Add("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nLast-Modified: y\r\nConnection: keep-alive\r\nETag: \"z\"\r\nAccept-Ranges: bytes\r\nVary: a\r\nVary: b\r\n\r\nok", "GET")
	f.Fuzz(func(t *testing.T, raw, method string) {
		req := &http.Request{Method: method}
		br := bufio.NewReaderSize(bytes.NewReader([]byte(raw)), 4<<10)
		br.Peek(1)
		buffered := br.Buffered()
		got := parseBufferedResponse(br, req)
		if got == nil {
			if br.Buffered() != buffered {
				t.Fatalf("declined %q after consuming %d bytes", raw, buffered-br.Buffered())
			}
			return
		}
		want, err := http.ReadResponse(bufio.NewReader(bytes.NewReader([]byte(raw))), req)
		if err != nil {
			t.Fatalf("read %q, which http.ReadResponse refuses: %v", raw, err)
		}
		g := &got.resp
		if g.Status != want.Status || g.StatusCode != want.StatusCode || g.Proto != want.Proto ||
			g.ProtoMajor != want.ProtoMajor || g.ProtoMinor != want.ProtoMinor || g.ContentLength != want.ContentLength ||
			g.Close != want.Close || g.TransferEncoding != nil || want.TransferEncoding != nil || g.Trailer != nil || want.Trailer != nil ||
			g.Request != req {
			t.Fatalf("%q: got %+v, http.ReadResponse %+v", raw, g, want)
		}
		if !maps.EqualFunc(g.Header, want.Header, slices.Equal) {
			t.Fatalf("%q: header %q, http.ReadResponse's %q", raw, g.Header, want.Header)
		}
		if (g.Body == http.NoBody) != (want.Body == http.NoBody) {
			t.Fatalf("%q: body %T, http.ReadResponse's %T", raw, g.Body, want.Body)
		}
		gb, gerr := io.ReadAll(g.Body)
		wb, werr := io.ReadAll(want.Body)
		if !bytes.Equal(gb, wb) || !errors.Is(gerr, werr) && gerr != werr {
			t.Fatalf("%q: body %q, %v; http.ReadResponse's %q, %v", raw, gb, gerr, wb, werr)
		}
	})
}

// TestH1ResponseSize: parseBufferedResponse's one allocation for a response
// and its body readers, with room for 6 header values, stays in the
// 320-byte size class (it was 224 bytes plus a slice of values; #13).
func TestH1ResponseSize(t *testing.T) {
	t.Parallel()
	if n := unsafe.Sizeof(h1Response{}); n > 320 {
		t.Errorf("h1Response is %d bytes, want at most 320", n)
	}
}
