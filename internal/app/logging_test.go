package app

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// TestLoggerTimeFormats: log.time_format rfc3339 writes an RFC 3339
// string, epoch (and the JSON default) seconds as a number.
func TestLoggerTimeFormats(t *testing.T) {
	t.Parallel()
	for _, tf := range []string{"", config.TimeFormatEpoch, config.TimeFormatRFC3339} {
		zc, err := loggerConfig(config.Log{TimeFormat: tf})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "log")
		zc.OutputPaths = []string{path}
		log, err := zc.Build()
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello")
		log.Sync()
		raw, _ := os.ReadFile(path)
		var entry map[string]any
		if err := json.Unmarshal(raw, &entry); err != nil {
			t.Fatalf("%q: %v in %q", tf, err, raw)
		}
		switch ts := entry["ts"].(type) {
		case string:
			if _, err := time.Parse(time.RFC3339Nano, ts); tf != config.TimeFormatRFC3339 || err != nil {
				t.Errorf("time_format %q: ts %q (%v)", tf, ts, err)
			}
		case float64:
			if tf == config.TimeFormatRFC3339 {
				t.Errorf("time_format rfc3339: ts is a number %v", ts)
			}
		default:
			t.Errorf("time_format %q: ts %#v", tf, entry["ts"])
		}
	}
	if _, err := NewLogger(config.Log{TimeFormat: "iso"}); err == nil || !strings.Contains(err.Error(), `log.time_format: "iso"`) {
		t.Fatalf("time_format iso: %v", err)
	}
}

// TestAccessLoggerFormats: in json the access log is the process logger
// named "access"; in common and combined each entry is the bare line.
func TestAccessLoggerFormats(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	base := zap.New(core)
	accessLogger(config.Log{}, base, nil).Info("request", zap.Int("status", 200))
	if e := logs.TakeAll(); len(e) != 1 || e[0].LoggerName != "access" || e[0].ContextMap()["status"] != int64(200) {
		t.Fatalf("json access entries: %+v", e)
	}
	off := false
	if l := accessLogger(config.Log{Access: &off, AccessFormat: "common"}, base, nil); l != nil {
		t.Fatal("access log off, but a logger was returned")
	}
	for _, f := range []proxy.AccessFormat{proxy.AccessCommon, proxy.AccessCombined} {
		var buf bytes.Buffer
		l := accessLogger(config.Log{AccessFormat: string(f)}, base, zapcore.AddSync(&buf))
		const line = `127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 2326`
		ce := l.Check(zap.InfoLevel, "")
		ce.Message = line
		ce.Write()
		if buf.String() != line+"\n" {
			t.Errorf("%s: wrote %q, want the bare line", f, buf.String())
		}
	}
}

// TestStoreLogsAtStart starts nodes against dead Redis and memcached: start
// succeeds, a warning says the store is unreachable, and go-redis's own
// "failed to dial" line arrives through zap (logger "redis") instead of
// the standard library logger. Not parallel: go-redis's logger is global.
func TestStoreLogsAtStart(t *testing.T) {
	redisLoggerOnce = sync.Once{}
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	start := func(r config.Resumption) {
		t.Helper()
		off := ""
		a, err := New(Options{Logger: log, Config: &config.Config{
			Listen: "127.0.0.1:0", Admin: &off, Resumption: r,
			Routes: []proxy.RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}}},
		}})
		if err != nil {
			t.Fatalf("start with %s: %v", r.Mode, err)
		}
		a.sessions.Close()
	}
	// with returns the entries taken from logs that match.
	with := func(entries []observer.LoggedEntry, logger, msg string) []observer.LoggedEntry {
		var out []observer.LoggedEntry
		for _, e := range entries {
			if e.LoggerName == logger && e.Message == msg {
				out = append(out, e)
			}
		}
		return out
	}
	const unreachable = "session store unreachable at start: full handshakes until it answers"
	var bridged []observer.LoggedEntry
	for _, mode := range []string{"redis", "memcached"} {
		r := config.Resumption{Mode: mode}
		if mode == "redis" {
			r.Redis.Addrs = []string{deadAddr(t)}
		} else {
			r.Memcached.Servers = []string{deadAddr(t)}
		}
		start(r)
		all := logs.TakeAll()
		bridged = append(bridged, with(all, "redis", "redis client")...)
		warn := with(all, "", unreachable)
		if len(warn) != 1 || warn[0].Level != zap.WarnLevel || warn[0].ContextMap()["store"] != mode {
			t.Errorf("%s down: warnings %+v, want one naming the store", mode, warn)
		}
	}
	if len(bridged) == 0 || !strings.Contains(bridged[0].ContextMap()["detail"].(string), "failed to dial") {
		t.Fatalf("go-redis log lines through zap: %+v, want its failed-to-dial line", bridged)
	}

	r := config.Resumption{Mode: "redis"}
	r.Redis.Addrs = []string{testserver.Redis(t).Addr}
	start(r)
	all := logs.TakeAll()
	if ok := with(all, "", "session store reachable"); len(ok) != 1 || len(with(all, "", unreachable)) != 0 {
		t.Errorf("redis up: entries %+v, want one 'reachable' and no warning", all)
	}
}
