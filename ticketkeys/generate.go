package ticketkeys

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
)

// minWake keeps a loop from spinning when the clock it is given stands still
// or jumps backwards.
const minWake = time.Second

// GenerateConfig configures a GenerateSource. The zero value is valid.
type GenerateConfig struct {
	// RotateEvery is how often a new sealing key is generated. If zero,
	// DefaultRotateEvery is used.
	RotateEvery time.Duration
	// Lifetime is the session lifetime: a key keeps opening tickets for
	// Lifetime after it stops sealing. If zero, DefaultKeyLifetime is used.
	// The ring holds ceil(Lifetime/RotateEvery)+1 keys, at most MaxKeys.
	Lifetime time.Duration
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Rand is the source of key bytes. If nil, crypto/rand.Reader is used.
	Rand io.Reader
	// Logger receives rotation logs. If nil, nothing is logged.
	Logger *zap.Logger
	// Metrics receives rotation counts and ring gauges. If nil, none.
	Metrics *Metrics
}

func (c GenerateConfig) rotateEvery() time.Duration {
	return cmp.Or(c.RotateEvery, DefaultRotateEvery)
}
func (c GenerateConfig) lifetime() time.Duration { return cmp.Or(c.Lifetime, DefaultKeyLifetime) }

// Validate reports configuration mistakes without doing any I/O.
func (c GenerateConfig) Validate() error {
	return validateRotation(c.RotateEvery, c.Lifetime, MaxKeys-1)
}

// validateRotation checks RotateEvery and Lifetime, and that a lifetime needs
// at most maxPast keys besides the sealing one.
func validateRotation(rotate, lifetime time.Duration, maxPast int64) error {
	err := errors.Join(validateDuration("rotate_every", rotate), validateDuration("lifetime", lifetime))
	if err != nil {
		return err
	}
	rotate, lifetime = cmp.Or(rotate, DefaultRotateEvery), cmp.Or(lifetime, DefaultKeyLifetime)
	if n := pastKeys(lifetime, rotate); n > maxPast {
		return fmt.Errorf("ticketkeys.lifetime: %q needs %d past keys at rotate_every %q, more than the %d a ring can hold: rotate less often or shorten the lifetime",
			lifetime.String(), n, rotate.String(), maxPast)
	}
	return nil
}

// GenerateSource generates random keys in memory and rotates them on a timer:
// the default for a single node. Keys never leave the process, so other nodes
// cannot open its tickets.
//
// Warning: generated keys live only in memory and are zeroed by the Holder
// once they leave the ring; a restart therefore invalidates every ticket.
type GenerateSource struct {
	runner
	rotate   time.Duration
	lifetime time.Duration
	rand     io.Reader

	// mu protects ring, the last ring published, and serialises rotations.
	mu   sync.Mutex
	ring *Ring
}

var _ Source = (*GenerateSource)(nil)

// NewGenerateSource validates cfg and returns a source that publishes into
// h. It starts nothing until Start.
func NewGenerateSource(h *Holder, cfg GenerateConfig) (*GenerateSource, error) {
	if err := checkNew(h, cfg); err != nil {
		return nil, err
	}
	return &GenerateSource{
		runner:   newRunner("generate", h, cfg.Logger, cfg.Metrics, cfg.Now),
		rotate:   cfg.rotateEvery(),
		lifetime: cfg.lifetime(),
		rand:     randReader(cfg.Rand),
	}, nil
}

// Start generates the first key, publishes it, and starts the rotation timer.
func (s *GenerateSource) Start(ctx context.Context) error {
	if err := s.begin(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.Rotate(); err != nil {
		return err
	}
	if !s.launch(s.tick, s.untilDue(), nil, 0) {
		return ErrClosed
	}
	return nil
}

// Rotate generates a new sealing key now, whatever the timer says, and
// publishes the new ring. Past keys stay while tickets they sealed may still
// be within Lifetime. On error the current ring is kept. After Close it
// returns ErrClosed.
func (s *GenerateSource) Rotate() error { return s.apply(&s.mu, s.rotateLocked) }

// tick rotates if the sealing key is RotateEvery old by the injected clock,
// and returns the wait until the next rotation is due.
func (s *GenerateSource) tick() (time.Duration, error) {
	s.mu.Lock()
	due := s.ring == nil || !s.now().Before(s.ring.Current().Created.Add(s.rotate))
	var err error
	if due {
		err = s.rotateLocked()
		s.record(err)
	}
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return s.untilDue(), nil
}

// untilDue returns the wait until the sealing key is RotateEvery old.
func (s *GenerateSource) untilDue() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring == nil {
		return minWake
	}
	return max(s.ring.Current().Created.Add(s.rotate).Sub(s.now()), minWake)
}

func (s *GenerateSource) rotateLocked() error {
	now := s.now()
	k, err := newRandomKey(s.rand, now)
	if err != nil {
		return err
	}
	keys := []*Key{k}
	if s.ring != nil {
		prev := s.ring.keys
		for j, old := range prev {
			// old stopped sealing when the key before it was created, or now.
			retired := now
			if j > 0 {
				retired = prev[j-1].Created
			}
			if now.Sub(retired) >= s.lifetime || len(keys) == MaxKeys {
				break
			}
			keys = append(keys, old)
		}
	}
	ring, err := NewRing(keys...)
	if err != nil {
		clear(k.Secret[:])
		return fmt.Errorf("ticketkeys: rotating: %w", err)
	}
	s.ring = ring
	s.publish(ring)
	return nil
}

// newRandomKey returns a key with a random name and secret.
func newRandomKey(rnd io.Reader, created time.Time) (*Key, error) {
	k := &Key{Created: created}
	if _, err := io.ReadFull(rnd, k.Name[:]); err != nil {
		return nil, fmt.Errorf("ticketkeys: generating key: %w", err)
	}
	if _, err := io.ReadFull(rnd, k.Secret[:]); err != nil {
		clear(k.Secret[:])
		return nil, fmt.Errorf("ticketkeys: generating key: %w", err)
	}
	return k, nil
}
