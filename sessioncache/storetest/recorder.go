package storetest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// Op names a sessioncache.Store method.
type Op string

// The Store methods, as recorded in Call.Op.
const (
	OpGet    Op = "get"
	OpPut    Op = "put"
	OpDelete Op = "delete"
)

// Call is one call made through a Recorder.
type Call struct {
	Op  Op
	Key string
	// Val is a copy of the value passed to Put or returned by Get, and nil
	// for Delete or a failed Get.
	Val []byte
	// TTL is the ttl passed to Put, and zero for Get and Delete.
	TTL time.Duration
	// Err is the error returned to the caller.
	Err error
}

// errNoStore is returned by a Recorder with a nil Store.
var errNoStore = errors.New("storetest: Recorder.Store is nil")

// Recorder is a sessioncache.Store that forwards each call to Store and
// records it, for tests of packages that use a store. Set Fault to inject
// failures. Its methods are safe for concurrent use; set its exported fields
// before the first call and do not change them afterwards. A nil Store makes
// every call fail with an error that is not sessioncache.ErrMiss.
type Recorder struct {
	// Store receives the calls.
	Store sessioncache.Store

	// Fault, if non-nil, is called before each call is forwarded; if it
	// returns an error, the call returns (and records) that error without
	// reaching Store. Returning sessioncache.ErrMiss from it for OpGet
	// simulates a lost entry; any other error, a failing store.
	Fault func(op Op, key string) error

	// mu guards calls.
	mu    sync.Mutex
	calls []Call
}

// NewRecorder returns a Recorder that forwards to s.
func NewRecorder(s sessioncache.Store) *Recorder { return &Recorder{Store: s} }

func (r *Recorder) before(op Op, key string) error {
	if r.Fault != nil {
		if err := r.Fault(op, key); err != nil {
			return err
		}
	}
	if r.Store == nil {
		return errNoStore
	}
	return nil
}

func (r *Recorder) record(c Call) {
	if c.Val != nil {
		c.Val = append([]byte{}, c.Val...)
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// Get implements sessioncache.Store.
func (r *Recorder) Get(ctx context.Context, key string) ([]byte, error) {
	val, err := []byte(nil), r.before(OpGet, key)
	if err == nil {
		val, err = r.Store.Get(ctx, key)
	}
	r.record(Call{Op: OpGet, Key: key, Val: val, Err: err})
	return val, err
}

// Put implements sessioncache.Store.
func (r *Recorder) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	err := r.before(OpPut, key)
	if err == nil {
		err = r.Store.Put(ctx, key, val, ttl)
	}
	if val == nil {
		val = []byte{}
	}
	r.record(Call{Op: OpPut, Key: key, Val: val, TTL: ttl, Err: err})
	return err
}

// Delete implements sessioncache.Store.
func (r *Recorder) Delete(ctx context.Context, key string) error {
	err := r.before(OpDelete, key)
	if err == nil {
		err = r.Store.Delete(ctx, key)
	}
	r.record(Call{Op: OpDelete, Key: key, Err: err})
	return err
}

// Calls returns the calls recorded so far, oldest first. The slice is the
// caller's.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// Count returns how many calls of op were recorded.
func (r *Recorder) Count(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c.Op == op {
			n++
		}
	}
	return n
}

// Reset forgets the recorded calls.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}

// Clock is a fake clock for stores that take a Now func. The zero Clock
// reads as the zero time; NewClock starts it elsewhere. It is safe for
// concurrent use.
type Clock struct {
	// mu guards now.
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time. It has the signature of time.Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var _ sessioncache.Store = (*Recorder)(nil)
