package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkServerHTTP2 measures one proxied GET over HTTP/2 (#13): a real
// TLS HTTP/2 client with several streams in flight on one connection, the
// real Server and Handler, and a loopback HTTP/1.1 upstream. The figures
// include the client's and the upstream's work, which are in this process
// too; profile it (-cpuprofile) to see the server's share.
func BenchmarkServerHTTP2(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	h, _ := benchHandler(b, up.URL, nil)
	benchServerHTTP2(b, h)
}

// BenchmarkServerHTTP2Canned is BenchmarkServerHTTP2 with the upstream
// replaced by a transport that answers at once from memory: what remains
// is the HTTP/2 server, TLS and the Handler.
func BenchmarkServerHTTP2Canned(b *testing.B) {
	h, _ := benchHandler(b, "http://127.0.0.1:1", cannedTransport)
	benchServerHTTP2(b, h)
}

// benchServerHTTP2 serves GETs to h through a Server over one HTTP/2
// connection, four streams in flight per GOMAXPROCS.
func benchServerHTTP2(b *testing.B, h http.Handler) {
	s := startServer(b, ServerConfig{Handler: h})
	var protos http.Protocols
	protos.SetHTTP2(true)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the test's self-signed certificate
		Protocols:       &protos,
	}}
	defer client.CloseIdleConnections()
	url := "https://" + s.Addr().String() + "/"
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			b.Errorf("got %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil { // one connection, opened before timing
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
