package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
)

// verdict returns the verdict of vr that starts with prefix, or fails.
func verdict(t *testing.T, vr VersionReport, prefix string) string {
	t.Helper()
	for _, v := range vr.Verdicts {
		if strings.HasPrefix(v, prefix) {
			return v
		}
	}
	t.Fatalf("TLS %s: no %q verdict in %q", vr.Version, prefix, vr.Verdicts)
	return ""
}

func wantVerdict(t *testing.T, vr VersionReport, want string) {
	t.Helper()
	prefix, _, _ := strings.Cut(want, ":")
	if got := verdict(t, vr, prefix+":"); !strings.HasPrefix(got, want) {
		t.Errorf("TLS %s: verdict %q, want %q...", vr.Version, got, want)
	}
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := WriteText(&text, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", text.String())
	if len(rep.Versions) != len(cfg.versions()) {
		t.Fatalf("%d version reports, want %d", len(rep.Versions), len(cfg.versions()))
	}
	return rep
}

func TestProbeEdgeproxy(t *testing.T) {
	needOpenSSL(t)
	addr := edgeproxyNode(t)
	rep := run(t, Config{Addr: addr, ServerName: "localhost"})
	if rep.OpenSSL == "" {
		t.Fatal("openssl installed but not used")
	}
	for _, vr := range rep.Versions {
		wantVerdict(t, vr, "resumption: works (5/5 reused)")
		wantVerdict(t, vr, "tickets: issued, ")
		// crypto/tls sends a ticket on every connection, resumed or not.
		// edgeproxy seals a fresh one each time, except that a TLS 1.2
		// resumption gets the ticket it presented back (it is under the
		// current key here), as OpenSSL keeps it.
		want := "change every connection"
		if vr.Version == "1.2" {
			want = "kept: not renewed on resumption"
		}
		if !strings.HasSuffix(verdict(t, vr, "tickets:"), want) {
			t.Errorf("TLS %s: tickets verdict %q: want %s", vr.Version, verdict(t, vr, "tickets:"), want)
		}
		if vr.Tickets.Size < 64 || vr.Tickets.PerConnection != 1 {
			t.Errorf("TLS %s: ticket size %d, %d per connection; want >= 64 bytes, 1", vr.Version, vr.Tickets.Size, vr.Tickets.PerConnection)
		}
		if !vr.Lifetime.Observable {
			t.Errorf("TLS %s: lifetime hint not observable with openssl: %s", vr.Version, vr.Lifetime.Note)
		}
	}
	v12, v13 := rep.Versions[0], rep.Versions[1]
	// Go servers send no lifetime hint in TLS 1.2 and 7 days in TLS 1.3.
	wantVerdict(t, v12, "lifetime hint: 0 (unspecified)")
	wantVerdict(t, v13, "lifetime hint: 604800 s")
	// crypto/tls has no session-ID cache: without tickets, nothing resumes.
	wantVerdict(t, v12, "session IDs: none returned, no resumption without tickets (0/5 reused")
	if v13.SessionID != nil {
		t.Error("TLS 1.3 has no session-ID resumption, yet a session-ID result is reported")
	}
}

func TestProbeGoServerTicketsDisabled(t *testing.T) {
	addr := goServer(t, &tls.Config{SessionTicketsDisabled: true})
	rep := run(t, Config{Addr: addr, Reconnects: 3, NoOpenSSL: true})
	for _, vr := range rep.Versions {
		wantVerdict(t, vr, "resumption: does not work (0/3 reused)")
		wantVerdict(t, vr, "tickets: not issued")
		wantVerdict(t, vr, "lifetime hint: not observable: crypto/tls does not expose it")
		if vr.Resumption.Attempts != 3 || len(vr.Resumption.Conns) != 4 {
			t.Errorf("TLS %s: %d attempts, %d connections; want 3 and 4", vr.Version, vr.Resumption.Attempts, len(vr.Resumption.Conns))
		}
	}
	wantVerdict(t, rep.Versions[0], "session IDs: not tested: Go's TLS client cannot resume by session ID alone")
}

func TestProbeNginx(t *testing.T) {
	addr := startNginx(t)
	needOpenSSL(t)
	rep := run(t, Config{Addr: addr, ServerName: "localhost"})
	for _, vr := range rep.Versions {
		wantVerdict(t, vr, "resumption: works (5/5 reused)")
		wantVerdict(t, vr, "tickets: issued, ")
		if vr.Lifetime.Seconds != nginxLifetime {
			t.Errorf("TLS %s: lifetime hint %+v, want %d s (ssl_session_timeout)", vr.Version, vr.Lifetime, nginxLifetime)
		}
	}
	v12, v13 := rep.Versions[0], rep.Versions[1]
	// OpenSSL does not renew a TLS 1.2 ticket it accepted; in TLS 1.3 it
	// sends two tickets after a full handshake and one after each
	// resumption.
	wantVerdict(t, v12, "tickets: issued")
	if !strings.Contains(verdict(t, v12, "tickets:"), "not renewed on resumption") {
		t.Errorf("TLS 1.2 tickets verdict %q: nginx keeps the ticket", verdict(t, v12, "tickets:"))
	}
	if v13.Tickets.PerConnection != 2 || !strings.Contains(verdict(t, v13, "tickets:"), "2 per connection, change every connection") {
		t.Errorf("TLS 1.3 tickets: %+v, verdict %q", v13.Tickets, verdict(t, v13, "tickets:"))
	}
	// The shared session cache resumes by session ID without tickets.
	wantVerdict(t, v12, "session IDs: resumption works without tickets (5/5 reused")
	if !v12.SessionID.Returned {
		t.Error("nginx returned a session ID, probe says it did not")
	}
}

func TestProbeUnsupportedVersion(t *testing.T) {
	addr := goServer(t, &tls.Config{MaxVersion: tls.VersionTLS12})
	rep := run(t, Config{Addr: addr, Versions: []uint16{tls.VersionTLS13}, NoOpenSSL: true})
	vr := rep.Versions[0]
	if vr.Supported || !strings.HasPrefix(vr.Verdicts[0], "not supported: ") {
		t.Fatalf("TLS 1.3 against a 1.2-only server: %+v", vr)
	}
}

func TestProbeJSON(t *testing.T) {
	addr := goServer(t, &tls.Config{})
	rep := run(t, Config{Addr: addr, Versions: []uint16{tls.VersionTLS12}, Reconnects: 2, NoOpenSSL: true})
	var b bytes.Buffer
	if err := WriteJSON(&b, rep); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Addr     string `json:"addr"`
		Versions []struct {
			Version    string `json:"version"`
			Supported  bool   `json:"supported"`
			Resumption struct {
				Reused   int `json:"reused"`
				Attempts int `json:"attempts"`
			} `json:"resumption"`
			Tickets struct {
				Issued bool `json:"issued"`
				Size   int  `json:"size"`
			} `json:"tickets"`
			SessionID *struct {
				Tested bool `json:"tested"`
			} `json:"session_id"`
			Verdicts []string `json:"verdicts"`
		} `json:"versions"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	v := got.Versions[0]
	if got.Addr != addr || v.Version != "1.2" || !v.Supported || v.Resumption.Reused != 2 || v.Resumption.Attempts != 2 ||
		!v.Tickets.Issued || v.Tickets.Size == 0 || v.SessionID == nil || v.SessionID.Tested || len(v.Verdicts) < 3 {
		t.Fatalf("JSON report: %s", b.String())
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{Addr: "example.com:443"}, ""},
		{"no port", Config{Addr: "example.com"}, `address "example.com"`},
		{"bad version", Config{Addr: "a:1", Versions: []uint16{tls.VersionTLS10}}, "TLS version"},
		{"negative reconnects", Config{Addr: "a:1", Reconnects: -1}, "reconnects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
	if sn := (&Config{Addr: "127.0.0.1:443"}).serverName(); sn != "" {
		t.Errorf("SNI for an IP address: %q, want none", sn)
	}
	if sn := (&Config{Addr: "example.com:443"}).serverName(); sn != "example.com" {
		t.Errorf("SNI: %q, want example.com", sn)
	}
}

func TestParseOpenSSLOutput(t *testing.T) {
	reconnect := `CONNECTED(00000003)
New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384
    Session-ID: 21E766A213F267829CF2CB19A889922C027B10F17CDF1294E4C828AB2E53A3B8
Reused, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384
    Session-ID: 21E766A213F267829CF2CB19A889922C027B10F17CDF1294E4C828AB2E53A3B8
New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384
    Session-ID: 9AB3
`
	s := parseReconnect(reconnect)
	if !s.Tested || s.Attempts != 2 || s.Reused != 1 || !s.Returned {
		t.Errorf("reconnect parse: %+v", s)
	}
	s = parseReconnect("New, TLSv1.2, Cipher is X\n    Session-ID: \nNew, TLSv1.2, Cipher is X\n    Session-ID: \n")
	if !s.Tested || s.Attempts != 1 || s.Reused != 0 || s.Returned {
		t.Errorf("no session ID: %+v", s)
	}
	if s := parseReconnect("connect:errno=111\n"); s.Tested {
		t.Errorf("failed run parsed as tested: %+v", s)
	}
	tests := []struct {
		out     string
		obs     bool
		seconds int64
	}{
		{"    TLS session ticket lifetime hint: 300 (seconds)\n    TLS session ticket:\n", true, 300},
		{"    TLS session ticket:\n    0000 - 01 e1\n", true, 0},
		{"    Session-ID: AB\n", false, 0},
	}
	for _, tt := range tests {
		l := parseLifetime(tt.out)
		if l.Observable != tt.obs || l.Seconds != tt.seconds {
			t.Errorf("parseLifetime(%q) = %+v, want observable %v, %d s", tt.out, l, tt.obs, tt.seconds)
		}
	}
}
