package acme_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/edgeproxy/edgeproxy/proxy/acme"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, yaml string
		want       []string // each must appear; none: valid
	}{
		{"minimal", `hosts: [a.example.com]`, nil},
		{"full", `
ca: https://ca.internal/acme/acme/directory
email: ops@example.com
hosts: [a.example.com, b.example.com]
challenges: [tls-alpn-01, http-01]
http_listen: ":80"
storage: {redis: {addrs: ["10.0.0.1:6379"], password_file: /run/pw, lock_ttl: 1m}}
on_demand: {allow: ["*.shops.example.com"], ask: "http://127.0.0.1:9000/ok"}`, nil},
		{"bad ca", `{ca: "ftp://x", hosts: [a.example.com]}`, []string{`acme.ca: "ftp://x": must be an http or https URL`}},
		{"staging and ca", `{ca: "https://x/dir", staging: true, hosts: [a.example.com]}`, []string{"acme.staging: conflicts with acme.ca"}},
		{"no hosts", `{email: a@b.c}`, []string{"acme.hosts: at least one host is required (or on_demand)"}},
		{"bad hosts", `{hosts: ["*.example.com", "a b", "x.example.com", "X.example.com"]}`, []string{
			`acme.hosts[0]: "*.example.com": wildcards need the DNS-01 challenge`,
			`acme.hosts[1]: "a b": not a host name`,
			`acme.hosts[3]: "X.example.com": duplicate of acme.hosts[2]`,
		}},
		{"http-01 without listener", `{hosts: [a.example.com], challenges: [http-01, dns-01]}`, []string{
			"acme.challenges[0]: http-01 needs acme.http_listen",
			`acme.challenges[1]: "dns-01": must be tls-alpn-01 or http-01`,
		}},
		{"bad http_listen", `{hosts: [a.example.com], http_listen: "80"}`, []string{`acme.http_listen: "80": must be host:port`}},
		{"two storages", `{hosts: [a.example.com], storage: {file: /d, redis: {addrs: ["h:1"]}}}`, []string{"acme.storage: set file or redis, not both"}},
		{"bad redis", `{hosts: [a.example.com], storage: {redis: {addrs: []}}}`, []string{"acme.storage.redis.addrs: at least one address is required"}},
		{"unguarded on-demand", `{on_demand: {}}`, []string{"acme.on_demand: set allow, ask or both"}},
		{"bad ask", `{on_demand: {ask: "not a url"}}`, []string{`acme.on_demand.ask: "not a url": must be an http or https URL`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c acme.Config
			dec := yaml.NewDecoder(strings.NewReader(tt.yaml))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}
