package proxy

import (
	"runtime"
	"runtime/metrics"
	"testing"

	"golang.org/x/net/http2"
)

// connMemory is what the process holds after a GC: live heap, goroutine
// stacks and goroutines.
type connMemory struct {
	heap, stack uint64
	goroutines  int
}

func readConnMemory() connMemory {
	runtime.GC()
	runtime.GC() // the second one frees what the first one's finalizers and sweeps released
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return connMemory{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// openIdleH2 brings h to the state of an idle browser connection, as
// bench/idleconns does: the server's SETTINGS read and acknowledged, and the
// server's acknowledgement of the client's SETTINGS read, so that the
// server's frame reader and serve loop both run. It returns the server's
// SETTINGS_MAX_FRAME_SIZE and the flow-control window the client may send
// on a new stream (the smaller of the connection's and the stream's).
func openIdleH2(h *h2Conn) (maxFrame, window uint32) {
	h.t.Helper()
	maxFrame, streamWin, connWin := uint32(16384), uint32(65535), uint32(65535)
	var settings, acked bool
	for !settings || !acked {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading the server's first frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				acked = true
				continue
			}
			settings = true
			if v, ok := f.Value(http2.SettingMaxFrameSize); ok {
				maxFrame = v
			}
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				streamWin = v
			}
			h.fr.WriteSettingsAck()
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connWin += f.Increment
			}
		}
	}
	return maxFrame, min(streamWin, connWin)
}

// TestIdleH2ConnectionMemory guards what one idle HTTP/2 connection costs
// the server (#13): goroutines, and heap plus stack bytes, with a real
// listener and real TLS clients. The clients run in this process too, so the
// bytes include their side; the bounds are generous against noise but fail
// on a regression such as a retained buffer or one more goroutine per
// connection. After one request with a body, the connection keeps a frame
// buffer as large as the largest frame the client sent, bounded by the
// SETTINGS_MAX_FRAME_SIZE the server advertises (net/http's default of 1 MiB
// let every connection pin a megabyte).
func TestIdleH2ConnectionMemory(t *testing.T) {
	// Not parallel: it reads process-wide memory statistics.
	const n = 200
	tests := []struct {
		name string
		// post sends one request whose body is a single DATA frame as
		// large as the server allows.
		post    bool
		maxHeap int64 // per connection, server and client side
	}{
		{"idle", false, 28 << 10},
		{"idle after one upload", true, 96 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, ServerConfig{Handler: okHandler()})
			addr := s.Addr().String()
			before := readConnMemory()
			conns := make([]*h2Conn, n)
			for i := range conns {
				h := dialH2(t, addr)
				maxFrame, window := openIdleH2(h)
				if maxFrame != http2MaxReadFrameSize {
					t.Fatalf("server advertises SETTINGS_MAX_FRAME_SIZE %d, want %d", maxFrame, http2MaxReadFrameSize)
				}
				if tt.post {
					h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock(), EndHeaders: true})
					h.fr.WriteData(1, true, make([]byte, min(maxFrame, window)))
					if code := h.status(1); code != 200 {
						t.Fatalf("upload: status %d", code)
					}
					h.fr.WritePing(false, [8]byte{2}) // read after the DATA frame: its answer means the server read it
					for {
						f, err := h.fr.ReadFrame()
						if err != nil {
							t.Fatal(err)
						}
						if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
							break
						}
					}
				}
				conns[i] = h
			}
			after := readConnMemory()
			goroutines := after.goroutines - before.goroutines
			heap := (int64(after.heap) - int64(before.heap)) / n
			stack := (int64(after.stack) - int64(before.stack)) / n
			ss := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
			metrics.Read(ss)
			t.Logf("%d connections: %d goroutines, %d heap + %d stack bytes per connection (server and client); goroutines start with %d bytes of stack", n, goroutines, heap, stack, ss[0].Value.Uint64())
			if goroutines > 2*n+8 {
				t.Errorf("%d goroutines for %d idle connections, want at most 2 per connection", goroutines, n)
			}
			if heap > tt.maxHeap {
				t.Errorf("%d heap bytes per idle connection, want at most %d", heap, tt.maxHeap)
			}
			// The serve loop and the frame reader park on 4 or 8 KiB of
			// stack each (h2conns.go; 16 KiB together under -race); this
			// catches a parked goroutine whose stack grew.
			if stack > 24<<10 {
				t.Errorf("%d stack bytes per idle connection, want at most %d", stack, 24<<10)
			}
			runtime.KeepAlive(conns)
		})
	}
}
