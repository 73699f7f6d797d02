package main

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
)

func TestProbeCommand(t *testing.T) {
	addr := demoFleet(t)[0]
	code, o, e := runCmd(t, "probe", addr, "--sni", "localhost", "--no-openssl", "--reconnects", "3")
	if code != 0 {
		t.Fatalf("probe: code %d, stderr %s", code, e)
	}
	for _, want := range []string{"TLS 1.2", "TLS 1.3", "resumption: works (3/3 reused)", "tickets: issued, ", "change every connection", "lifetime hint: not observable"} {
		if !strings.Contains(o, want) {
			t.Errorf("probe output lacks %q:\n%s", want, o)
		}
	}
	code, o, e = runCmd(t, "probe", "--json", "--tls", "1.3", addr, "--no-openssl")
	if code != 0 {
		t.Fatalf("probe --json: code %d, stderr %s", code, e)
	}
	var rep struct {
		Versions []struct {
			Version  string   `json:"version"`
			Verdicts []string `json:"verdicts"`
		} `json:"versions"`
	}
	if err := json.Unmarshal([]byte(o), &rep); err != nil || len(rep.Versions) != 1 || rep.Versions[0].Version != "1.3" ||
		rep.Versions[0].Verdicts[0] != "resumption: works (5/5 reused)" {
		t.Fatalf("probe --json: %v\n%s", err, o)
	}
}

func TestProbeCommandErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if code, o, e := runCmd(t, "probe", dead, "--no-openssl", "--tls", "1.2"); code != 1 || !strings.Contains(e, "no TLS handshake succeeded") || !strings.Contains(o, "connection failed: ") {
		t.Errorf("probe of a closed port: code %d, stdout %q, stderr %q", code, o, e)
	}
	if code, _, _ := runCmd(t, "probe"); code != 2 {
		t.Errorf("probe without an address: code %d, want 2 (usage)", code)
	}
	if code, _, e := runCmd(t, "probe", "a:1", "--tls", "1.0"); code != 1 || !strings.Contains(e, `--tls "1.0"`) {
		t.Errorf("probe --tls 1.0: code %d, %q", code, e)
	}
}
