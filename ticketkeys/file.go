package ticketkeys

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// DefaultReloadDelay is how long FileSource waits after a change in a watched
// directory before it reloads, so the several events of one write or swap
// lead to one reload.
const DefaultReloadDelay = 100 * time.Millisecond

// FileConfig configures a FileSource.
type FileConfig struct {
	// Paths lists the key files, at least one. Each holds one or more keys
	// of 48 or 80 bytes (16-byte name, then secret material), either as
	// base64 lines (HAProxy's tls-ticket-keys) or concatenated binary
	// (nginx's ssl_session_ticket_key); see KeyFileFormat. The sealing key
	// of the first file seals; every key opens. Required.
	Paths []string
	// KeySize is the size of each key in the files, 48 or 80. If zero, it is
	// inferred; only a binary file whose size is a multiple of both (240,
	// 480, ...) then needs it set.
	KeySize int
	// DisableWatch turns off reloading on change. If false, the parent
	// directory of every path is watched, which also catches the ..data
	// symlink swap of a Kubernetes Secret volume. Reload works either way.
	DisableWatch bool
	// ReloadDelay is how long to wait after a change before reloading. If
	// zero, DefaultReloadDelay is used.
	ReloadDelay time.Duration
	// Now returns the current time, for key age. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives reload logs. If nil, nothing is logged.
	Logger *zap.Logger
	// Metrics receives reload counts and ring gauges. If nil, none.
	Metrics *Metrics
}

// Validate reports configuration mistakes without reading the files.
func (c FileConfig) Validate() error {
	var errs []error
	if len(c.Paths) == 0 {
		errs = append(errs, errors.New("ticketkeys.files: at least one key file is required"))
	}
	for i, p := range c.Paths {
		if p == "" {
			errs = append(errs, fmt.Errorf("ticketkeys.files[%d]: path is empty", i))
		}
	}
	if c.KeySize != 0 && c.KeySize != KeySize48 && c.KeySize != KeySize80 {
		errs = append(errs, fmt.Errorf("ticketkeys.key_size: must be 48 or 80, got %d", c.KeySize))
	}
	errs = append(errs, validateDuration("reload_delay", c.ReloadDelay))
	return errors.Join(errs...)
}

// FileSource loads keys from files and reloads them when they change (an
// fsnotify watch on their directories) and on Reload (SIGHUP). A reload that
// fails keeps the current ring, is logged and counted, and is retried with
// backoff; the next change or Reload tries again too.
//
// Files must be readable by their owner only: a file with any group or other
// permission bit is refused with a *FileModeError. The key creation time is
// the file's modification time.
//
// Warning: these files are the fleet's long-term secret. Whoever reads one
// can decrypt every ticket sealed under its keys; rotate them (prepend a new
// key, drop the oldest once the session lifetime has passed) and never keep
// them in images or repositories.
type FileSource struct {
	runner
	paths       []string
	keySize     int
	watch       bool
	reloadDelay time.Duration
	// onReload, if set before Start, is called after every reload the loop
	// makes, with its result. Tests wait on it instead of sleeping.
	onReload func(error)

	// mu protects ring, the last ring published, and serialises reloads.
	mu   sync.Mutex
	ring *Ring

	// kick carries watch events to the loop; one pending kick is enough.
	kick chan struct{}
}

var (
	_ Source   = (*FileSource)(nil)
	_ Reloader = (*FileSource)(nil)
)

// NewFileSource validates cfg and returns a source that publishes into h. It
// reads nothing until Start.
func NewFileSource(h *Holder, cfg FileConfig) (*FileSource, error) {
	if err := checkNew(h, cfg); err != nil {
		return nil, err
	}
	return &FileSource{
		runner:      newRunner("file", h, cfg.Logger, cfg.Metrics, cfg.Now),
		paths:       append([]string(nil), cfg.Paths...),
		keySize:     cfg.KeySize,
		watch:       !cfg.DisableWatch,
		reloadDelay: cmp.Or(cfg.ReloadDelay, DefaultReloadDelay),
		kick:        make(chan struct{}, 1),
	}, nil
}

// Start loads the files, publishes their keys, and starts watching. It fails
// if a file is missing, unreadable, readable by others, or malformed, or if
// the watch cannot be set up.
func (s *FileSource) Start(ctx context.Context) error {
	if err := s.begin(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.Reload(); err != nil {
		return err
	}
	if s.watch {
		if err := s.startWatch(); err != nil {
			return err
		}
	}
	if !s.launch(s.step, idle, s.kick, s.reloadDelay) {
		return ErrClosed
	}
	return nil
}

// Reload reads the files again and publishes their keys if they changed. On
// error the current ring is kept and the error is returned (and counted and
// logged). After Close it returns ErrClosed.
func (s *FileSource) Reload() error { return s.apply(&s.mu, s.reloadLocked) }

func (s *FileSource) reloadLocked() error {
	files, err := loadKeyFiles(s.paths, s.keySize)
	if err != nil {
		return err
	}
	var keys []*Key
	for _, lf := range files {
		keys = append(keys, lf.ringOrder()...)
	}
	if s.ring != nil && sameKeys(s.ring.keys, keys) {
		zeroKeys(keys)
		return nil
	}
	ring, err := NewRing(keys...)
	if err != nil {
		zeroKeys(keys)
		return fmt.Errorf("ticketkeys: loading key files: %w", err)
	}
	s.ring = ring
	s.publish(ring)
	return nil
}

// step is the loop's reload: after a change, or as a retry.
func (s *FileSource) step() (time.Duration, error) {
	err := s.Reload()
	if s.onReload != nil {
		s.onReload(err)
	}
	return idle, err
}

// sameKeys reports whether a and b hold the same keys in the same order.
func sameKeys(a, b []*Key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Secret != b[i].Secret || !a[i].Created.Equal(b[i].Created) {
			return false
		}
	}
	return true
}

// startWatch watches the directory of every path and forwards relevant
// events to the loop as kicks.
func (s *FileSource) startWatch() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("ticketkeys: watching key files (set DisableWatch and reload on SIGHUP instead): %w", err)
	}
	// names maps each watched directory to the base names that matter in it.
	names := make(map[string]map[string]bool)
	for _, p := range s.paths {
		dir, base := filepath.Split(filepath.Clean(p))
		dir = filepath.Clean(dir)
		if names[dir] == nil {
			names[dir] = map[string]bool{"..data": true} // Kubernetes Secret volume swap
			if err := w.Add(dir); err != nil {
				w.Close()
				return fmt.Errorf("ticketkeys: watching key file directory %q: %w", dir, err)
			}
		}
		names[dir][base] = true
	}
	if !s.spawn(func() { s.forward(w, names) }) {
		w.Close()
		return ErrClosed
	}
	return nil
}

// forward turns watch events on key files into kicks until Close, and then
// closes the watcher.
func (s *FileSource) forward(w *fsnotify.Watcher, names map[string]map[string]bool) {
	defer w.Close()
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			dir, base := filepath.Split(ev.Name)
			if !names[filepath.Clean(dir)][base] {
				continue
			}
			select {
			case s.kick <- struct{}{}:
			default: // a reload is already pending
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("watching key files", zap.Error(err))
		}
	}
}
