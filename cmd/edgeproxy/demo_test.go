package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestDemoCommand(t *testing.T) {
	code, o, e := runCmd(t, "demo", "--bench-conns", "150", "--concurrency", "3", "--duration", "1ms", "--admin=false")
	if code != 0 {
		t.Fatalf("demo: code %d, stderr %s", code, e)
	}
	m := regexp.MustCompile(`summary: resumed (\d+\.\d+)% of handshakes`).FindStringSubmatch(o)
	if m == nil {
		t.Fatalf("no summary in:\n%s", o)
	}
	if p, _ := strconv.ParseFloat(m[1], 64); p < 99 {
		t.Fatalf("demo resumed %.2f%%, want >= 99%% (mode tickets)\n%s", p, o)
	}
	for _, want := range []string{"3 proxy nodes", "resumption mode tickets", "openssl s_client -connect", "curl -k https://", "serving for 1ms"} {
		if !strings.Contains(o, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}

func TestDemoCommandModes(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "redis"}, `mode redis needs --redis HOST:PORT`},
		{[]string{"--mode", "memcached"}, `mode memcached needs --memcached HOST:PORT`},
		{[]string{"--mode", "psk"}, `mode "psk": must be tickets, sticky, off, redis or memcached`},
		{[]string{"--memcached", "127.0.0.1:11211"}, "used only with mode memcached"},
		{[]string{"--nodes", "100"}, "nodes: must be 1 to 16"},
	}
	for _, tt := range tests {
		code, _, e := runCmd(t, append([]string{"demo"}, tt.args...)...)
		if code != 1 || !strings.Contains(e, tt.want) {
			t.Errorf("demo %q: code %d, stderr %q; want 1 and %q", tt.args, code, e, tt.want)
		}
	}
}
