package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// AccessFormat is the layout of access log lines.
type AccessFormat string

// Access log formats.
const (
	// AccessJSON logs a "request" entry with structured fields (see
	// logAccess), encoded like every other log entry.
	AccessJSON AccessFormat = "json"
	// AccessCommon logs the Common Log Format line as the entry's message,
	// with no fields:
	//	remote - - [10/Oct/2000:13:55:36 -0700] "GET /path HTTP/1.1" 200 2326
	// The request line carries the path without its query, as AccessJSON
	// does: a query may hold secrets.
	AccessCommon AccessFormat = "common"
	// AccessCombined is AccessCommon followed by the quoted Referer and
	// User-Agent request headers (Apache's and nginx's "combined").
	AccessCombined AccessFormat = "combined"
)

// Validate reports an unknown format. The empty format is AccessJSON.
func (f AccessFormat) Validate() error {
	switch f {
	case "", AccessJSON, AccessCommon, AccessCombined:
		return nil
	}
	return fmt.Errorf("access log format %q: must be json, common or combined", string(f))
}

// clfTime is the Common Log Format timestamp layout.
const clfTime = "02/Jan/2006:15:04:05 -0700"

// logAccess writes the access log line for one request. In AccessJSON the
// entry is "request" with the fields
//
//	method, host, path (no query: it may hold secrets), status, bytes,
//	duration, upstream ("" when none was chosen), tls_version ("1.2",
//	"1.3"; "" without TLS), resumed, remote.
//
// In AccessCommon and AccessCombined the entry's message is the line, and
// it has no fields. status is 0 when no response was written (the request
// was aborted), and 101 for a protocol switch such as WebSocket, whose
// traffic is not counted in bytes.
func (h *Handler) logAccess(w *accessRecorder, r *http.Request, x *exchange, start time.Time) {
	if h.accessFmt == AccessCommon || h.accessFmt == AccessCombined {
		if ce := h.accessLog.Check(zap.InfoLevel, ""); ce != nil {
			ce.Message = clfLine(h.accessFmt, w, r, start)
			ce.Write()
		}
		return
	}
	ce := h.accessLog.Check(zap.InfoLevel, "request")
	if ce == nil {
		return
	}
	upstream := ""
	if x.upstream != nil {
		upstream = x.upstream.name
	}
	tlsVersion, resumed := "", false
	if r.TLS != nil {
		tlsVersion, resumed = VersionName(r.TLS.Version), r.TLS.DidResume
	}
	ce.Write(
		zap.String("method", r.Method),
		zap.String("host", r.Host),
		zap.String("path", r.URL.Path),
		zap.Int("status", w.status),
		zap.Int64("bytes", w.bytes),
		zap.Duration("duration", time.Since(start)),
		zap.String("upstream", upstream),
		zap.String("tls_version", tlsVersion),
		zap.Bool("resumed", resumed),
		zap.String("remote", r.RemoteAddr),
	)
}

// clfLine formats one request in the Common or Combined Log Format. Values
// from the request are escaped (quote, backslash, control and non-ASCII
// bytes as \xHH, as nginx does), so a client cannot forge a line or a field.
func clfLine(f AccessFormat, w *accessRecorder, r *http.Request, start time.Time) string {
	remote, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		remote = r.RemoteAddr
	}
	b := make([]byte, 0, 160)
	b = appendCLFValue(b, remote)
	b = append(b, " - - ["...)
	b = start.AppendFormat(b, clfTime)
	b = append(b, "] \""...)
	b = appendCLFValue(b, r.Method)
	b = append(b, ' ')
	b = appendCLFValue(b, r.URL.EscapedPath())
	b = append(b, ' ')
	b = appendCLFValue(b, r.Proto)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	if w.bytes == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendInt(b, w.bytes, 10)
	}
	if f == AccessCombined {
		b = append(b, " \""...)
		b = appendCLFValue(b, r.Referer())
		b = append(b, "\" \""...)
		b = appendCLFValue(b, r.UserAgent())
		b = append(b, '"')
	}
	return string(b)
}

// appendCLFValue appends s, "-" if empty, with bytes that could break the
// line escaped as \xHH.
func appendCLFValue(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

// accessRecorder wraps a ResponseWriter to record the status and the number
// of body bytes written. It implements http.Flusher and http.Hijacker (which
// WebSocket proxying needs) by delegating through http.ResponseController,
// and Unwrap so ResponseController reaches the other optional methods of the
// writer beneath (deadlines, full duplex).
type accessRecorder struct {
	http.ResponseWriter
	status int   // first final (or 101) status written; 0 until then
	bytes  int64 // body bytes written
}

func (w *accessRecorder) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *accessRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher.
func (w *accessRecorder) Flush() { _ = w.FlushError() }

// FlushError flushes and reports whether the writer beneath could; it is
// what http.ResponseController.Flush calls.
func (w *accessRecorder) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker. It fails with http.ErrNotSupported on
// writers that cannot hijack, such as HTTP/2 streams.
func (w *accessRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return c, rw, err
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *accessRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
