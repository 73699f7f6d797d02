package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodRoute = `
routes:
  - upstreams: ["http://127.0.0.1:8080"]
`

func TestParseGood(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(`
listen: 127.0.0.1:8443
admin: ""
log: {level: debug, format: console}
tls:
  min_version: "1.3"
timeouts: {handshake: 5s, read_header: 5s, idle: 60s}
resumption:
  mode: tickets
  session_lifetime: 2h
  ticket_keys: {source: file, files: [/etc/edgeproxy/ticket.key]}
routes:
  - hosts: ["example.com", "*.example.org"]
    path_prefix: /api/
    upstreams: ["http://10.0.0.1:8080", "https://10.0.0.2:8443"]
    balance: least_conn
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin == nil || *c.Admin != "" {
		t.Fatalf("admin: \"\" must turn the admin listener off, got %v", c.Admin)
	}
	if c.Resumption.SessionLifetime.Hours() != 2 || c.Routes[0].Balance != "least_conn" {
		t.Fatalf("fields not decoded: %+v", c)
	}
}

func TestParseBad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top-level field", "lisen: x\n" + goodRoute, "field lisen not found"},
		{"unknown nested field", "tls: {min_versoin: \"1.2\"}\n" + goodRoute, "field min_versoin not found"},
		{"listen without port", "listen: localhost\n" + goodRoute, `listen: "localhost": must be host:port`},
		{"admin port not a number", "admin: 127.0.0.1:http\n" + goodRoute, `admin: "127.0.0.1:http": port "http"`},
		{"bad log level", "log: {level: loud}\n" + goodRoute, `log.level: "loud"`},
		{"bad log format", "log: {format: xml}\n" + goodRoute, `log.format: "xml"`},
		{"bad tls version", "tls: {min_version: \"1.1\"}\n" + goodRoute, `tls.min_version: "1.1": must be 1.2 or 1.3`},
		{"certificate without key", "tls: {certificates: [{cert: a.pem}]}\n" + goodRoute, "tls.certificates[0].key: required"},
		{"negative timeout", "timeouts: {idle: -1s}\n" + goodRoute, `timeouts.idle: must not be negative, got "-1s"`},
		{"no routes", "listen: 127.0.0.1:1\n", "routes: at least one route is required"},
		{"bad upstream scheme", "routes: [{upstreams: [\"htp://x\"]}]\n", `routes[0].upstreams[0]: "htp://x"`},
		{"second route bad", "routes: [{upstreams: [\"http://a\"]}, {upstreams: [\"ftp://b\"]}]\n", `routes[1].upstreams[0]: "ftp://b"`},
		{"bad balance", "routes: [{upstreams: [\"http://a\"], balance: random}]\n", `routes[0].balance: "random"`},
		{"unknown mode", "resumption: {mode: psk}\n" + goodRoute, `resumption.mode: "psk"`},
		{"lifetime over 7 days", "resumption: {session_lifetime: 200h}\n" + goodRoute, `resumption.session_lifetime: "200h0m0s"`},
		{"file source without files", "resumption: {ticket_keys: {source: file}}\n" + goodRoute, "resumption.ticket_keys.files: required"},
		{"files without file source", "resumption: {ticket_keys: {files: [a]}}\n" + goodRoute, "resumption.ticket_keys.files: set, but source is"},
		{"unknown key source", "resumption: {ticket_keys: {source: vault}}\n" + goodRoute, `resumption.ticket_keys.source: "vault"`},
		{"redis keys without kek", "resumption: {ticket_keys: {source: redis, redis: {addrs: [\"127.0.0.1:6379\"]}}}\n" + goodRoute, "resumption.ticket_keys.redis.kek_file: required"},
		{"redis keys bad addr", "resumption: {ticket_keys: {source: redis, redis: {addrs: [\"redis\"], kek_file: k}}}\n" + goodRoute, `resumption.ticket_keys.redis.addrs[0]: "redis"`},
		// Store addresses get the one store address check, sessioncache.CheckAddr:
		// a host, and a port that is not 0.
		{"redis keys port 0", "resumption: {ticket_keys: {source: redis, redis: {addrs: [\"127.0.0.1:0\"], kek_file: k}}}\n" + goodRoute, `resumption.ticket_keys.redis.addrs[0]: "127.0.0.1:0": port must be a number in 1..65535`},
		{"redis keys no host", "resumption: {ticket_keys: {source: redis, redis: {addrs: [\":6379\"], kek_file: k}}}\n" + goodRoute, `resumption.ticket_keys.redis.addrs[0]: ":6379": host is empty`},
		{"negative store timeout", "resumption: {store: {timeout: -1s}}\n" + goodRoute, `resumption.store.timeout: must not be negative, got "-1s"`},
		{"negative rotation", "resumption: {ticket_keys: {rotate_every: -1h}}\n" + goodRoute, `resumption.ticket_keys.rotate_every: must be positive, got "-1h0m0s"`},
		{"negative limit", "limits: {max_connections_per_ip: -5}\n" + goodRoute, "limits.max_connections_per_ip: must not be negative, got -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted a bad config; want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "edgeproxy.yaml")
	if err := os.WriteFile(p, []byte("routes: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+": ") {
		t.Fatalf("Load error = %v; want it to start with the path", err)
	}
}

func TestExampleConfigsAreValid(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found in configs/")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}
