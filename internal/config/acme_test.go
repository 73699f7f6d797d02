package config

import (
	"strings"
	"testing"
)

func TestACMESectionNamesFullPaths(t *testing.T) {
	t.Parallel()
	_, err := Parse(strings.NewReader(`
routes: [{upstreams: ["http://127.0.0.1:9000"]}]
tls:
  acme:
    ca: "not a url"
    hosts: []
    on_demand: {}
`))
	if err == nil {
		t.Fatal("Parse accepted a broken tls.acme section")
	}
	for _, want := range []string{
		`tls.acme.ca: "not a url": must be an http or https URL`,
		"tls.acme.on_demand: set allow, ask or both",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nwant it to contain %q", err, want)
		}
	}

	c, err := Parse(strings.NewReader(`
routes: [{upstreams: ["http://127.0.0.1:9000"]}]
tls:
  acme:
    email: ops@example.com
    hosts: [a.example.com]
    storage: {redis: {addrs: ["127.0.0.1:6379"], key_prefix: "certs/", lock_ttl: 45s}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.TLS.ACME.Storage.Redis; r == nil || r.Redis.KeyPrefix != "certs/" || r.LockTTL.Seconds() != 45 {
		t.Errorf("parsed storage.redis = %+v", r)
	}
}
