package config

import (
	"strings"
	"testing"
)

// FuzzParse: any bytes give a Config or an error, never a panic.
func FuzzParse(f *testing.F) {
	f.Add("routes: [{upstreams: [\"http://127.0.0.1:8080\"]}]\n")
	f.Add("listen: 127.0.0.1:8443\nresumption: {mode: redis, redis: {addrs: [\"a:1\"]}, store: {timeout: 25ms}}\n" + goodRoute)
	f.Add("resumption: {ticket_keys: {source: file, files: [k]}}\ntls: {certificates: [{cert: a, key: b}]}\n" + goodRoute)
	f.Add("routes: [{hosts: [\"*.\"], upstreams: [\"htp://x\"], health_check: {interval: -1s}}]\n")
	f.Add("&a [*a, *a]")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(strings.NewReader(in))
		if err == nil && c == nil {
			t.Fatal("Parse returned neither a Config nor an error")
		}
	})
}
