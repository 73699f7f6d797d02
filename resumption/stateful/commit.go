package stateful

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// The commit path (#12): a Conn parks the session its handshake issued, and
// HandshakeDone(nil) commits it here. Local takes it at once, marked
// local-only, so a client that returns to this node resumes immediately;
// Store takes it from the writers, off the handshake's path, after which
// Local's copy is marked stored.
//
// The window: a client that reconnects to another node before the writers'
// put reached Store gets a full handshake there (never a failed one). It
// is the time from HandshakeDone to Store's acknowledgement, exported as
// edgeproxy_session_commit_delay_seconds; TestCommitWindow measures it.
// Unless CommitAsync is set, HandshakeDone waits for that acknowledgement
// (at most Timeout) before the listener serves the connection, which
// closes the window for every client that reconnects after the server's
// first response (or close): the handshake goroutine waits, the listener
// does not, and concurrent commits still share a pipelined write. Measured
// on a loaded 2-core machine, clients reconnecting to another node the
// moment the server closed missed 3-10% of the time without the wait.
//
// Overflow: when the queue is full (Store slower than the handshake rate)
// a commit is not queued but dropped and counted (result "overflow"): its
// session stays in Local as local-only and resumes on this node, like a
// session whose store write failed. Writing it on the caller's goroutine
// instead would hand Store's slowness to the listener at the moment Store
// is overloaded, and delay every new connection by up to Timeout.

// maxBatch bounds how many queued sessions a writer sends in one pipelined
// round trip, to a store that can (batchPutter).
const maxBatch = 64

// batchPutter is implemented by stores that write several values in one
// round trip (sessioncache/redis: a pipeline). Its error means some or all
// entries were not stored.
type batchPutter interface {
	PutBatch(ctx context.Context, entries []sessioncache.Entry, ttl time.Duration) error
}

// committer holds the writers' queue and their bookkeeping. The writers
// start with the first commit; Close stops them.
type committer struct {
	queue   chan *entry
	workers int
	start   sync.Once
	stop    chan struct{} // closed by Close
	wg      sync.WaitGroup

	// mu protects closed, pending and idle: whether Close ran, the
	// sessions queued or being written, and a channel closed when pending
	// drops to zero (nil while it is zero). Sends to queue happen under mu,
	// so none follows Close.
	mu      sync.Mutex
	closed  bool
	pending int
	idle    chan struct{}
}

func newCommitter(queue, workers int) *committer {
	return &committer{queue: make(chan *entry, queue), workers: workers, stop: make(chan struct{})}
}

// commit stores the session of a completed handshake: Local now, Store
// through the writers (or Local alone in sticky mode), counting the result.
// Unless CommitAsync is set, it waits for the writers, at most Timeout, if
// wait is true.
func (s *Backend) commit(e *entry, wait bool) {
	if s.shared == nil {
		r := commitOK
		if s.localPut(e.key, e.local(flagLocalOnly, 0)) != nil {
			r = commitError
		}
		s.m.commit(r)
		return
	}
	e.epoch = s.epoch()                                    // before the store write is queued
	_ = s.localPut(e.key, e.local(flagLocalOnly, e.epoch)) // logged by localPut
	e.committed = time.Now()
	if wait && !s.async {
		e.acked = make(chan struct{})
	}
	if !s.enqueue(e) {
		s.m.commit(commitOverflow)
		return
	}
	if e.acked != nil {
		t := time.NewTimer(s.timeout)
		select {
		case <-e.acked:
		case <-t.C: // the writers are behind: let the connection go
		}
		t.Stop()
	}
}

// enqueue hands e to the writers without blocking; false if the queue is
// full or the Backend closed.
func (s *Backend) enqueue(e *entry) bool {
	c := s.writer
	c.start.Do(func() {
		for range c.workers {
			c.wg.Add(1)
			go s.write()
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	select {
	case c.queue <- e:
		if c.pending == 0 {
			c.idle = make(chan struct{})
		}
		c.pending++
		return true
	default:
		return false
	}
}

// write is a writer: it takes what is queued, up to maxBatch, and stores
// it, until Close; then it writes what is left and returns.
func (s *Backend) write() {
	c := s.writer
	defer c.wg.Done()
	batch := make([]*entry, 0, maxBatch)
	for {
		select {
		case e := <-c.queue:
			batch = append(batch[:0], e)
		case <-c.stop:
			for {
				select {
				case e := <-c.queue:
					s.store(append(batch[:0], e))
				default:
					return
				}
			}
		}
	more:
		for len(batch) < maxBatch {
			select {
			case e := <-c.queue:
				batch = append(batch, e)
			default:
				break more
			}
		}
		s.store(batch)
		clear(batch)
	}
}

// store writes batch to Store, pipelined if Store can, and accounts for it.
func (s *Backend) store(batch []*entry) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session commit panicked", zap.String("mode", s.mode), zap.Any("panic", r))
		}
		for _, e := range batch {
			if e.acked != nil {
				close(e.acked)
			}
		}
		s.writer.done(len(batch))
	}()
	if bp, ok := s.shared.(batchPutter); ok && len(batch) > 1 {
		err := s.sharedPutBatch(bp, batch)
		for _, e := range batch {
			s.stored(e, err)
		}
		return
	}
	for _, e := range batch {
		s.stored(e, s.sharedPut(e.key, e.value()))
	}
}

// stored accounts for e's store write. On success Local's copy is marked
// stored, so that Store is the truth for it again (a revocation or a
// single-use consumption on another node holds here too); on failure it
// stays local-only. If Local dropped e meanwhile (Revoke or a consumption
// on this node), it is put back marked stored, which Local reads only
// while Store fails.
func (s *Backend) stored(e *entry, err error) {
	if err != nil {
		s.m.commit(commitError)
		return
	}
	s.m.commitDone(time.Since(e.committed))
	// A new slice: Local may keep the one it was given.
	_ = s.localPut(e.key, localValue(flagStored, e.epoch, e.value()))
}

// sharedPutBatch writes batch in one call within Timeout, unless the
// breaker skips it. Each entry counts as a put.
func (s *Backend) sharedPutBatch(bp batchPutter, batch []*entry) error {
	ok, probe := s.breaker.allow()
	if !ok {
		for range batch {
			s.m.skip(opPut)
		}
		return errBreakerOpen
	}
	entries := make([]sessioncache.Entry, len(batch))
	for i, e := range batch {
		entries[i] = sessioncache.Entry{Key: e.key, Val: e.value()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.lat.timeout())
	start := time.Now()
	err := bp.PutBatch(ctx, entries, s.lifetime)
	elapsed := time.Since(start)
	cancel()
	r := s.sharedDone(opPut, elapsed, err) // one latency sample per call
	for range batch[1:] {
		s.m.call(opPut, r, elapsed)
	}
	s.breaker.done(probe, r == resultError || r == resultTimeout, err)
	if err != nil {
		s.log.Debug("session store batch put failed", zap.String("mode", s.mode), zap.Int("sessions", len(batch)), zap.Error(err))
	}
	return err
}

// done accounts for n written sessions.
func (c *committer) done(n int) {
	c.mu.Lock()
	c.pending -= n
	if c.pending == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
	c.mu.Unlock()
}

// Flush waits until every session committed so far has been written to
// Store (or its write failed), or ctx is done. Commits made while it waits
// may delay it. A Backend without Store has nothing to flush.
func (s *Backend) Flush(ctx context.Context) error {
	c := s.writer
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stateful: flushing session commits: %w", ctx.Err())
	}
}

// close stops the writers once they wrote what is queued (each write
// bounded by Timeout, or skipped by an open breaker).
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	c.wg.Wait()
}
