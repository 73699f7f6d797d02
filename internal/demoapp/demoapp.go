// Package demoapp is the small upstream HTTP application that edgeproxy's
// quick start, demo and tests put behind the proxy: it answers with what it
// saw, so a person or a test can check what the proxy forwarded.
package demoapp

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
)

// Reply is the JSON body the application answers with.
type Reply struct {
	App            string `json:"app"`
	Host           string `json:"host"`
	Method         string `json:"method"`
	Path           string `json:"path"`
	Proto          string `json:"proto"`
	ForwardedFor   string `json:"x_forwarded_for"`
	ForwardedProto string `json:"x_forwarded_proto"`
	ForwardedHost  string `json:"x_forwarded_host"`
	SessionID      string `json:"x_tls_session_id,omitempty"`
}

// Handler returns the application. name is reported as "app", so tests can
// tell upstreams apart.
func Handler(name string) http.Handler {
	if name == "" {
		name, _ = os.Hostname()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", name)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(Reply{
			App: name, Host: r.Host, Method: r.Method, Path: r.URL.Path, Proto: r.Proto,
			ForwardedFor:   r.Header.Get("X-Forwarded-For"),
			ForwardedProto: r.Header.Get("X-Forwarded-Proto"),
			ForwardedHost:  r.Header.Get("X-Forwarded-Host"),
			SessionID:      strings.TrimSpace(r.Header.Get("X-TLS-Session-ID")),
		})
	})
	return mux
}
