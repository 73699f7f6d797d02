package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

var epoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// TestRecorderConformance runs the suite through a Recorder: wrapping a
// store must not change its behaviour.
func TestRecorderConformance(t *testing.T) {
	t.Parallel()
	clk := storetest.NewClock(epoch)
	var recorders []*storetest.Recorder
	storetest.Run(t, func(t *testing.T) sessioncache.Store {
		s, err := lru.New(lru.Config{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		r := storetest.NewRecorder(s)
		recorders = append(recorders, r)
		return r
	}, storetest.Options{Advance: clk.Advance})
	n := 0
	for _, r := range recorders {
		n += len(r.Calls())
	}
	if n == 0 {
		t.Error("the suite made no calls through the recorders")
	}
}

func TestRecorder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	inner, err := lru.New(lru.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := storetest.NewRecorder(inner)
	_ = r.Put(ctx, "k", []byte("v"), time.Minute)
	val, _ := r.Get(ctx, "k")
	val[0] = 'X' // the recorded copy is unaffected
	_, _ = r.Get(ctx, "missing")
	_ = r.Delete(ctx, "k")

	want := []storetest.Call{
		{Op: storetest.OpPut, Key: "k", Val: []byte("v"), TTL: time.Minute},
		{Op: storetest.OpGet, Key: "k", Val: []byte("v")},
		{Op: storetest.OpGet, Key: "missing", Err: sessioncache.ErrMiss},
		{Op: storetest.OpDelete, Key: "k"},
	}
	got := r.Calls()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Calls() =\n%v\nwant\n%v", got, want)
	}
	if r.Count(storetest.OpGet) != 2 {
		t.Errorf("Count(get) = %d, want 2", r.Count(storetest.OpGet))
	}
	r.Reset()
	if len(r.Calls()) != 0 {
		t.Errorf("Calls() after Reset = %v", r.Calls())
	}
}

func TestRecorderFault(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	inner, err := lru.New(lru.Config{})
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("store down")
	r := &storetest.Recorder{Store: inner, Fault: func(op storetest.Op, key string) error {
		if op == storetest.OpPut {
			return down
		}
		return nil
	}}
	if err := r.Put(ctx, "k", []byte("v"), time.Minute); err != down {
		t.Errorf("Put = %v, want the injected error", err)
	}
	if _, err := r.Get(ctx, "k"); !errors.Is(err, sessioncache.ErrMiss) {
		t.Errorf("Get = %v, want ErrMiss: the faulted Put must not reach the store", err)
	}
	if c := r.Calls()[0]; c.Err != down {
		t.Errorf("recorded Put error = %v, want the injected error", c.Err)
	}

	var empty storetest.Recorder
	if _, err := empty.Get(ctx, "k"); err == nil || errors.Is(err, sessioncache.ErrMiss) {
		t.Errorf("Get on a Recorder without Store = %v, want an error other than ErrMiss", err)
	}
}

func TestClock(t *testing.T) {
	t.Parallel()
	c := storetest.NewClock(epoch)
	c.Advance(90 * time.Second)
	if got, want := c.Now(), epoch.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("Now() = %v, want %v", got, want)
	}
	var zero storetest.Clock
	if !zero.Now().IsZero() {
		t.Errorf("zero Clock reads %v", zero.Now())
	}
}

// ExampleRecorder shows a test of a store user: it wraps the store it hands
// over, injects a failure, and checks what was called.
func ExampleRecorder() {
	ctx := context.Background()
	inner, _ := lru.New(lru.Config{})
	rec := &storetest.Recorder{
		Store: inner,
		Fault: func(op storetest.Op, key string) error {
			if op == storetest.OpGet {
				return errors.New("injected: store unreachable")
			}
			return nil
		},
	}

	// ... the code under test would use rec as its sessioncache.Store ...
	_ = rec.Put(ctx, "edgeproxy/v1/sess/01", []byte("state"), time.Hour)
	_, err := rec.Get(ctx, "edgeproxy/v1/sess/01")

	fmt.Println(err)
	for _, c := range rec.Calls() {
		fmt.Println(c.Op, c.Key, c.TTL, c.Err)
	}
	// Output:
	// injected: store unreachable
	// put edgeproxy/v1/sess/01 1h0m0s <nil>
	// get edgeproxy/v1/sess/01 0s injected: store unreachable
}
