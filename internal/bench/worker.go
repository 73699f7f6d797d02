package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// worker makes one connection at a time and keeps its tallies to itself;
// Run merges them once every worker has ended. Only its own goroutine uses
// it.
type worker struct {
	r     *runner
	id    int
	k     int // connections started, for round robin
	confs []*tls.Config
	slot  *sessionSlot // nil in mode full
	stop  context.Context
	cc    countingConn
	buf   []byte
	reqs  [][]byte // the HTTP request per target

	full, resumed, crossNode, drainTimeouts int64
	fullSent, fullRecv, resSent, resRecv    int64
	fullHist, resumedHist                   histogram
	errs                                    map[string]int64
	errExample                              map[string]string
	warmups, warmupErrs                     int64
	firstErr                                error
}

func newWorker(r *runner, id int) *worker {
	w := &worker{r: r, id: id, buf: make([]byte, 16<<10), errs: map[string]int64{}, errExample: map[string]string{}}
	var cache tls.ClientSessionCache
	switch r.cfg.mode() {
	case ModeResume:
		w.slot = &sessionSlot{}
		cache = w.slot
	case ModeFirst:
		cache = dropCache{}
	}
	w.confs = r.tlsConfigs(cache)
	w.reqs = make([][]byte, len(w.confs))
	for i, c := range w.confs {
		host := c.ServerName
		if host == "" {
			host = r.targets[i]
		}
		w.reqs[i] = []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: edgeproxy-bench\r\nConnection: close\r\n\r\n")
	}
	return w
}

// next returns the target of the worker's next connection.
func (w *worker) next() int {
	t := (w.id + w.k) % len(w.confs)
	w.k++
	return t
}

// warmup makes the one connection of mode resume that gets the worker its
// first session. It is not counted among the measured connections.
func (w *worker) warmup() {
	w.warmups++
	_, _, err := w.connect(w.next())
	if err != nil {
		w.warmupErrs++
		if w.firstErr == nil {
			w.firstErr = err
		}
	}
}

// loop makes measured connections until the run's bound is reached.
func (w *worker) loop() {
	r := w.r
	for {
		if r.abort.Err() != nil {
			return
		}
		if r.cfg.Conns > 0 {
			if r.issued.Add(1) > int64(r.cfg.Conns) {
				return
			}
		} else if w.stop.Err() != nil {
			return
		}
		target := w.next()
		from := -1
		if w.slot != nil && w.slot.cs != nil {
			from = w.slot.from
		}
		st, d, err := w.connect(target)
		switch {
		case err != nil:
			k := kindOf(err)
			w.errs[k]++
			if _, ok := w.errExample[k]; !ok {
				w.errExample[k] = err.Error()
			}
			r.errs.Add(1)
		case st.resumed:
			w.resumed++
			w.resumedHist.Record(d)
			w.resSent += st.sent
			w.resRecv += st.recv
			if from >= 0 && from != target {
				w.crossNode++
			}
			r.resumed.Add(1)
		default:
			w.full++
			w.fullHist.Record(d)
			w.fullSent += st.sent
			w.fullRecv += st.recv
		}
		r.done.Add(1)
	}
}

// connStats is what one successful connection measured.
type connStats struct {
	resumed    bool
	sent, recv int64 // bytes up to the end of the handshake
}

// connect makes one connection to target: dial, handshake, then a GET / or
// a close_notify, and reads until the server closes. d is the handshake's
// duration, from TCP connected to handshake done.
func (w *worker) connect(target int) (st connStats, d time.Duration, err error) {
	r := w.r
	timeout := orDefault(r.cfg.Timeout, DefaultTimeout)
	deadline := time.Now().Add(timeout)
	raw, err := r.dialer.DialContext(r.abort, "tcp", r.targets[target])
	r.dialed(target, err)
	if err != nil {
		return st, 0, &phaseError{phase: "dial", err: err}
	}
	defer raw.Close()
	// Abort (Ctrl-C) closes the connection in progress; AfterFunc runs no
	// goroutine unless it fires.
	stopAbort := context.AfterFunc(r.abort, func() { raw.Close() })
	defer stopAbort()
	raw.SetDeadline(deadline)
	w.cc.reset(raw)
	if w.slot != nil {
		w.slot.cur = target
	}
	tc := tls.Client(&w.cc, w.confs[target])
	t0 := time.Now()
	if err := tc.Handshake(); err != nil {
		return st, 0, &phaseError{phase: "handshake", err: err}
	}
	d = time.Since(t0)
	st.sent, st.recv = w.cc.sent, w.cc.recv
	st.resumed = tc.ConnectionState().DidResume

	if r.cfg.HTTP {
		if err := w.httpGet(tc, target); err != nil {
			return st, d, err
		}
		return st, d, nil
	}
	// Tell the server we are done and wait for it to close: a clean end
	// for the server, and the moment TLS 1.3 session tickets arrive.
	if err := tc.CloseWrite(); err != nil {
		return st, d, nil // the handshake succeeded; the server left first
	}
	raw.SetDeadline(time.Now().Add(orDefault(r.cfg.DrainTimeout, DefaultDrainTimeout)))
	if err := w.drain(tc); errors.Is(err, os.ErrDeadlineExceeded) {
		w.drainTimeouts++
	}
	return st, d, nil
}

// httpGet sends GET / and reads the response until the server closes.
func (w *worker) httpGet(tc *tls.Conn, target int) error {
	if _, err := tc.Write(w.reqs[target]); err != nil {
		return &phaseError{phase: "http", err: err}
	}
	n, err := io.ReadAtLeast(tc, w.buf, len("HTTP/1.1 200"))
	if err != nil {
		return &phaseError{phase: "http", err: err}
	}
	head := w.buf[:n]
	if !bytes.HasPrefix(head, []byte("HTTP/1.")) || len(head) < 12 || (head[9] != '2' && head[9] != '3') {
		line := head
		if i := bytes.IndexByte(line, '\r'); i >= 0 {
			line = line[:i]
		}
		return &phaseError{phase: "http", err: &statusError{line: string(line[:min(len(line), 64)])}}
	}
	if err := w.drain(tc); err != nil && !isClosed(err) {
		return &phaseError{phase: "http", err: err}
	}
	return nil
}

// drain reads and discards until EOF or an error, reusing the worker's
// buffer.
func (w *worker) drain(c io.Reader) error {
	for {
		if _, err := c.Read(w.buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// countingConn counts TCP payload bytes in each direction. The worker
// reuses one per connection.
type countingConn struct {
	net.Conn
	sent, recv int64
}

func (c *countingConn) reset(conn net.Conn) {
	c.Conn, c.sent, c.recv = conn, 0, 0
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.recv += int64(n)
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent += int64(n)
	return n, err
}

// dropCache is a tls.ClientSessionCache that keeps nothing: a client with
// it offers resumption (so the server issues a session) but never resumes.
type dropCache struct{}

func (dropCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (dropCache) Put(string, *tls.ClientSessionState)        {}

// sessionSlot is a tls.ClientSessionCache of one entry that ignores the
// cache key: the session a worker got from any target is offered to the
// next target, as a client behind a load balancer does with one host name.
// It records which target issued the session, to count cross-node
// resumption. Only the worker's goroutine uses it (crypto/tls calls Get
// and Put from Handshake and Read).
type sessionSlot struct {
	cs   *tls.ClientSessionState
	from int // target that issued cs
	cur  int // target of the connection in progress
}

func (s *sessionSlot) Get(string) (*tls.ClientSessionState, bool) { return s.cs, s.cs != nil }

func (s *sessionSlot) Put(_ string, cs *tls.ClientSessionState) {
	s.cs = cs
	s.from = s.cur
}
