package proxy

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestAccessLogFields(t *testing.T) {
	b := startUpstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "hello")
	})
	core, logs := observer.New(zap.InfoLevel)
	h := newTestHandler(t, HandlerConfig{
		Routes:    []RouteConfig{{Hosts: []string{"127.0.0.1"}, Upstreams: []string{b.URL}}},
		AccessLog: zap.New(core),
	})
	ts := serveProxy(t, h)
	host := strings.TrimPrefix(ts.URL, "https://")

	tests := []struct {
		name   string
		url    string
		host   string
		status int64
		bytes  int64
		up     string
	}{
		{"proxied", ts.URL + "/path/x?token=secret", host, 201, 5, b.URL},
		{"no route", ts.URL + "/nowhere", "other.example", 404, int64(len(proxyErrorBodies[404]) + 1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.TakeAll()
			req, _ := http.NewRequest("GET", tt.url, nil)
			req.Host = tt.host
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()

			entries := logs.TakeAll()
			if len(entries) != 1 {
				t.Fatalf("%d access log entries, want 1", len(entries))
			}
			e := entries[0]
			if e.Message != "request" || e.Level != zap.InfoLevel {
				t.Errorf("entry %s %q, want info \"request\"", e.Level, e.Message)
			}
			f := e.ContextMap()
			path := strings.SplitN(strings.SplitN(tt.url, "?", 2)[0], host, 2)[1]
			want := map[string]any{
				"method": "GET", "host": tt.host, "path": path, "status": tt.status, "bytes": tt.bytes,
				"upstream": tt.up, "tls_version": "1.3", "resumed": false,
			}
			for k, v := range want {
				if f[k] != v {
					t.Errorf("field %s = %#v, want %#v", k, f[k], v)
				}
			}
			if remote, _ := f["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
				t.Errorf("remote = %#v, want the client's 127.0.0.1:port", f["remote"])
			}
			if d, ok := f["duration"].(time.Duration); !ok || d <= 0 {
				t.Errorf("duration = %#v, want a positive time.Duration", f["duration"])
			}
			if strings.Contains(e.Message+f["path"].(string), "secret") {
				t.Error("query string leaked into the access log")
			}
		})
	}
}

func TestAccessLogWebSocketStatus(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "test-proto")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := brw.ReadString('\n')
		brw.WriteString(line)
		brw.Flush()
	}))
	t.Cleanup(echo.Close)
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{echo.URL}, Upgrades: []string{"test-proto"}}}, AccessLog: zap.New(core)})
	served := make(chan struct{})
	ts := serveProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		close(served)
	}))

	req, _ := http.NewRequest("GET", ts.URL+"/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "test-proto")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	rwc := resp.Body.(io.ReadWriteCloser)
	io.WriteString(rwc, "ping\n")
	got, _ := io.ReadAll(rwc)
	rwc.Close()
	if string(got) != "ping\n" {
		t.Errorf("echo through the upgraded connection = %q, want %q", got, "ping\n")
	}
	<-served // the upgraded connection is closed, ServeHTTP returned and logged
	entries := logs.FilterMessage("request").All()
	if len(entries) != 1 || entries[0].ContextMap()["status"] != int64(101) {
		t.Errorf("access log %v, want one entry with status 101", entries)
	}
}

func TestAccessRecorderOptionalInterfaces(t *testing.T) {
	rec := httptest.NewRecorder()
	w := &accessRecorder{ResponseWriter: rec}
	var rw http.ResponseWriter = w

	if err := http.NewResponseController(rw).Flush(); err != nil {
		t.Errorf("ResponseController.Flush: %v", err)
	}
	if !rec.Flushed {
		t.Error("Flush did not reach the wrapped writer")
	}
	rw.(http.Flusher).Flush()
	n, err := rw.Write([]byte("abc"))
	if n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w.status != http.StatusOK || w.bytes != 3 {
		t.Errorf("recorded status %d bytes %d, want 200 and 3", w.status, w.bytes)
	}
	// ResponseRecorder cannot hijack: the error must come from beneath, not
	// from a wrapper that hides the method.
	if _, _, err := rw.(http.Hijacker).Hijack(); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("Hijack error = %v, want http.ErrNotSupported", err)
	}
	if err := http.NewResponseController(rw).SetWriteDeadline(time.Now()); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("SetWriteDeadline error = %v, want ErrNotSupported from the recorder", err)
	}
	if w.Unwrap() != rec {
		t.Error("Unwrap does not return the wrapped writer")
	}
}

// discardWriter is a ResponseWriter that accepts everything.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func TestAccessRecorderStatus(t *testing.T) {
	tests := []struct {
		name       string
		write      func(w http.ResponseWriter)
		wantStatus int
		wantBytes  int64
	}{
		{"nothing written", func(w http.ResponseWriter) {}, 0, 0},
		{"implicit 200", func(w http.ResponseWriter) { io.WriteString(w, "abc") }, 200, 3},
		{"explicit status", func(w http.ResponseWriter) { w.WriteHeader(503); io.WriteString(w, "down") }, 503, 4},
		{"informational then final", func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(204) }, 204, 0},
		{"first final status wins", func(w http.ResponseWriter) { w.WriteHeader(201); w.WriteHeader(500) }, 201, 0},
		{"switching protocols", func(w http.ResponseWriter) { w.WriteHeader(101) }, 101, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &accessRecorder{ResponseWriter: &discardWriter{}}
			tt.write(w)
			if w.status != tt.wantStatus || w.bytes != tt.wantBytes {
				t.Errorf("recorded status %d bytes %d, want %d and %d", w.status, w.bytes, tt.wantStatus, tt.wantBytes)
			}
		})
	}
}

// TestAccessLogCLF checks the Common and Combined Log Format lines: the
// whole line is the entry's message, with no fields; the query is left out
// as in JSON; values from the client are escaped so they cannot end a field
// or the line.
func TestAccessLogCLF(t *testing.T) {
	t.Parallel()
	b := startUpstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "hello")
	})
	const ts = `\[\d\d/[A-Z][a-z][a-z]/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]`
	tests := []struct {
		format AccessFormat
		want   string
	}{
		{AccessCommon, `^127\.0\.0\.1 - - ` + ts + ` "GET /path/x HTTP/1\.1" 201 5$`},
		{AccessCombined, `^127\.0\.0\.1 - - ` + ts + ` "GET /path/x HTTP/1\.1" 201 5 "https://ref\.example/" "agent \\x22quoted\\x22 \\x5C\\x09\\xC3\\xA9"$`},
	}
	for _, tt := range tests {
		t.Run(string(tt.format), func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zap.InfoLevel)
			h := newTestHandler(t, HandlerConfig{
				Routes:       []RouteConfig{{Upstreams: []string{b.URL}}},
				AccessLog:    zap.New(core),
				AccessFormat: tt.format,
			})
			srv := serveProxy(t, h)
			req, _ := http.NewRequest("GET", srv.URL+"/path/x?token=secret", nil)
			req.Header.Set("Referer", "https://ref.example/")
			req.Header.Set("User-Agent", "agent \"quoted\" \\\té")
			c := srv.Client()
			c.Transport.(*http.Transport).ForceAttemptHTTP2 = false
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			entries := logs.TakeAll()
			if len(entries) != 1 {
				t.Fatalf("%d entries, want 1", len(entries))
			}
			e := entries[0]
			if !regexp.MustCompile(tt.want).MatchString(e.Message) || len(e.Context) != 0 {
				t.Fatalf("line %q with %d fields, want %s and none", e.Message, len(e.Context), tt.want)
			}
		})
	}
}

func TestAccessFormatValidate(t *testing.T) {
	t.Parallel()
	for _, f := range []AccessFormat{"", AccessJSON, AccessCommon, AccessCombined} {
		if err := f.Validate(); err != nil {
			t.Errorf("%q: %v", f, err)
		}
	}
	if _, err := NewHandler(HandlerConfig{AccessFormat: "apache"}); err == nil || !strings.Contains(err.Error(), `access log format "apache": must be json, common or combined`) {
		t.Fatalf("NewHandler with format apache: %v", err)
	}
}
