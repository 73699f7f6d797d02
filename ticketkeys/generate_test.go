package ticketkeys

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestGenerateConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     GenerateConfig
		wantErr string
	}{
		{"zero value", GenerateConfig{}, ""},
		{"explicit", GenerateConfig{RotateEvery: 2 * time.Hour, Lifetime: 12 * time.Hour}, ""},
		{"negative rotate", GenerateConfig{RotateEvery: -time.Second}, `ticketkeys.rotate_every: must be positive, got "-1s"`},
		{"negative lifetime", GenerateConfig{Lifetime: -time.Minute}, `ticketkeys.lifetime: must be positive, got "-1m0s"`},
		{"too many keys", GenerateConfig{RotateEvery: time.Minute, Lifetime: 63*time.Minute + time.Second}, `needs 64 past keys`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestGenerateRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		rotate   time.Duration
		lifetime time.Duration
		wantKeys int // steady-state ring size: ceil(lifetime/rotate)+1
	}{
		{"hourly, 24h sessions", time.Hour, 24 * time.Hour, 25},
		{"hourly, 90m sessions", time.Hour, 90 * time.Minute, 3},
		{"lifetime shorter than rotation", time.Hour, 10 * time.Minute, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			h, sched := newManualHolder()
			s, err := NewGenerateSource(h, GenerateConfig{
				RotateEvery: tt.rotate, Lifetime: tt.lifetime, Now: clock.Now, Rand: &seqReader{},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			first := h.Ring().Current()
			if h.Ring().Len() != 1 || !first.Created.Equal(clock.Now()) {
				t.Fatalf("first ring: %d keys created %v", h.Ring().Len(), first.Created)
			}

			// Not yet due: the tick must not rotate.
			clock.Add(tt.rotate - time.Second)
			if next, err := s.tick(); err != nil || next != minWake {
				t.Fatalf("tick before due = %v, %v; want %v, nil", next, err, minWake)
			}
			if h.Ring().Current() != first {
				t.Fatal("rotated before RotateEvery elapsed")
			}

			var seen []*Key
			seen = append(seen, first)
			for i := 0; i < tt.wantKeys+3; i++ {
				clock.Add(time.Second)
				if next, err := s.tick(); err != nil || next != tt.rotate {
					t.Fatalf("tick when due = %v, %v; want %v, nil", next, err, tt.rotate)
				}
				cur := h.Ring().Current()
				if cur == seen[len(seen)-1] {
					t.Fatalf("rotation %d did not change the current key", i)
				}
				if !cur.Created.Equal(clock.Now()) {
					t.Fatalf("new key created %v, want %v", cur.Created, clock.Now())
				}
				seen = append(seen, cur)
				clock.Add(tt.rotate - time.Second)
			}
			if got := h.Ring().Len(); got != tt.wantKeys {
				t.Errorf("steady ring size = %d, want %d", got, tt.wantKeys)
			}
			// Every key that left the ring is zeroed once the grace ends,
			// and none still in it.
			sched.run()
			ring := h.Ring()
			for _, k := range seen {
				in := ring.Lookup(k.Name) == k
				if in == isZero(k) {
					t.Errorf("key %s: in ring %v, zeroed %v", k.Name, in, isZero(k))
				}
			}
			// Each kept past key retired (when its successor was created)
			// less than Lifetime before the last rotation; the newest
			// dropped key retired at least Lifetime before it.
			last := ring.Current().Created
			m := ring.Len()
			for i := len(seen) - m + 1; i < len(seen); i++ {
				if last.Sub(seen[i].Created) >= tt.lifetime {
					t.Errorf("kept key %d retired %v before the last rotation, lifetime %v", i-1, last.Sub(seen[i].Created), tt.lifetime)
				}
			}
			if dropped := seen[len(seen)-m]; last.Sub(dropped.Created) < tt.lifetime {
				t.Errorf("dropped a key that retired only %v before the last rotation", last.Sub(dropped.Created))
			}
		})
	}
}

func TestGenerateRotateForcedAndStatus(t *testing.T) {
	t.Parallel()
	clock := newFakeClock(time.Unix(1_800_000_000, 0))
	h := NewHolder(HolderConfig{})
	defer h.Close()
	s, err := NewGenerateSource(h, GenerateConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := h.Ring().Current()
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	r := h.Ring()
	if r.Current() == first || r.Lookup(first.Name) != first {
		t.Fatal("forced rotation must seal with a new key and keep the old one for opening")
	}
	st := s.Status()
	if st.Source != "generate" || st.Degraded || st.Keys != 2 || st.Current != r.Current().Name || !st.LastSuccess.Equal(clock.Now()) {
		t.Errorf("status = %+v", st)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Start = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// failingReader fails every read.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestGenerateRandFailureKeepsRingAndDegrades(t *testing.T) {
	t.Parallel()
	h := NewHolder(HolderConfig{})
	defer h.Close()
	rnd := &switchReader{r: &seqReader{}}
	s, err := NewGenerateSource(h, GenerateConfig{Rand: rnd})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := h.Ring()
	rnd.set(failingReader{})
	if err := s.Rotate(); err == nil || !strings.Contains(err.Error(), "entropy exhausted") {
		t.Fatalf("Rotate = %v, want the reader's error", err)
	}
	if h.Ring() != before || !s.Degraded() {
		t.Fatal("a failed rotation must keep the ring and report degraded")
	}
	rnd.set(&seqReader{n: 1000})
	if err := s.Rotate(); err != nil || s.Degraded() {
		t.Fatalf("Rotate after recovery = %v, degraded %v", err, s.Degraded())
	}
}

func TestGenerateStartFailsWithoutEntropy(t *testing.T) {
	t.Parallel()
	h := NewHolder(HolderConfig{})
	s, err := NewGenerateSource(h, GenerateConfig{Rand: failingReader{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without entropy")
	}
	if h.Ring() != nil {
		t.Error("a ring was published")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// TestLoopRecoversFromPanicAndRetries drives the shared loop with a step that
// panics, then fails, then succeeds: the loop must keep going.
func TestLoopRecoversFromPanicAndRetries(t *testing.T) {
	t.Parallel()
	h := NewHolder(HolderConfig{})
	r := newRunner("test", h, nil, nil, nil)
	r.retryMin, r.retryMax = time.Millisecond, 2*time.Millisecond
	type result struct {
		n  int
		st Status
	}
	results := make(chan result, 10)
	n := 0
	step := func() (time.Duration, error) {
		n++
		var err error
		switch n {
		case 1:
			panic("boom")
		case 2:
			err = errors.New("transient")
		}
		r.record(err)
		results <- result{n, r.Status()}
		if err != nil {
			return 0, err
		}
		return idle, nil
	}
	if err := r.begin(); err != nil {
		t.Fatal(err)
	}
	if !r.launch(step, 0, nil, 0) {
		t.Fatal("launch refused")
	}
	var got []result
	waitFor(t, results, "third step", func(res result) bool { got = append(got, res); return res.n == 3 })
	r.Close()
	if len(got) != 2 || got[0].n != 2 || got[0].st.Failures != 2 || !got[0].st.Degraded {
		t.Fatalf("after a panic and an error: %+v, want step 2 with 2 consecutive failures", got)
	}
	if st := got[1].st; st.Failures != 0 || st.Degraded || st.Err != nil {
		t.Errorf("after recovery: %+v", st)
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	r := newRunner("test", NewHolder(HolderConfig{}), nil, nil, nil)
	r.retryMin, r.retryMax = time.Second, 8*time.Second
	for _, tt := range []struct {
		failures int
		lo, hi   time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{4, 4 * time.Second, 8 * time.Second},
		{10, 4 * time.Second, 8 * time.Second},
		{100, 4 * time.Second, 8 * time.Second},
	} {
		for range 50 {
			if d := r.backoff(tt.failures); d < tt.lo || d > tt.hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", tt.failures, d, tt.lo, tt.hi)
			}
		}
	}
}
