package proxy

import (
	"bufio"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// logAccess writes the access log line for one request:
//
//	method, host, path (no query: it may hold secrets), status, bytes,
//	duration, upstream ("" when none was chosen), tls_version ("1.2",
//	"1.3"; "" without TLS), resumed, remote.
//
// status is 0 when no response was written (the request was aborted), and
// 101 for a protocol switch such as WebSocket, whose traffic is not counted
// in bytes.
func (h *Handler) logAccess(w *accessRecorder, r *http.Request, x *exchange, start time.Time) {
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
