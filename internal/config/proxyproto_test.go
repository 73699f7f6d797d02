package config

import (
	"slices"
	"strings"
	"testing"
)

func TestParseProxyProtocol(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(`
proxy_protocol:
  trusted: [10.0.0.0/8, 192.0.2.7]
  policy: optional
  untrusted: ignore
` + goodRoute))
	if err != nil {
		t.Fatal(err)
	}
	pp := c.ProxyProtocol
	if !slices.Equal(pp.Trusted, []string{"10.0.0.0/8", "192.0.2.7"}) || pp.Policy != "optional" || pp.Untrusted != "ignore" {
		t.Fatalf("proxy_protocol not decoded: %+v", pp)
	}
	_, err = Parse(strings.NewReader("proxy_protocol: {trusted: [10.0.0.0/8, 10.0.0.300]}\n" + goodRoute))
	if want := `proxy_protocol.trusted[1]: "10.0.0.300"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Parse = %v, want an error containing %q", err, want)
	}
}
