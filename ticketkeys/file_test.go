package ticketkeys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startFileSource starts a FileSource on paths whose loop reports every
// reload on the returned channel.
func startFileSource(t *testing.T, cfg FileConfig) (*FileSource, *Holder, <-chan error) {
	t.Helper()
	h := NewHolder(HolderConfig{})
	t.Cleanup(func() { h.Close() })
	s, err := NewFileSource(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 64)
	s.onReload = func(err error) {
		select {
		case reloads <- err:
		default:
		}
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, h, reloads
}

// firstName returns the name of the first key in raw.
func firstName(raw []byte) Name {
	var n Name
	copy(n[:], raw)
	return n
}

func TestFileConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     FileConfig
		wantErr string
	}{
		{"ok", FileConfig{Paths: []string{"/k"}}, ""},
		{"no paths", FileConfig{}, "ticketkeys.files: at least one key file is required"},
		{"empty path", FileConfig{Paths: []string{"/k", ""}}, "ticketkeys.files[1]: path is empty"},
		{"key size", FileConfig{Paths: []string{"/k"}, KeySize: 64}, "ticketkeys.key_size: must be 48 or 80, got 64"},
		{"reload delay", FileConfig{Paths: []string{"/k"}, ReloadDelay: -1}, `ticketkeys.reload_delay: must be positive, got "-1ns"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestFileSourceLoadsInOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	rawA, rawB := rawKeys(80, 2, 1), rawKeys(48, 1, 50)
	writeFile(t, a, rawA, 0o600)
	writeFile(t, b, rawB, 0o600)
	_, h, _ := startFileSource(t, FileConfig{Paths: []string{a, b}, DisableWatch: true})
	ring := h.Ring()
	want := []Name{firstName(rawA), firstName(rawA[80:]), firstName(rawB)}
	if ring.Len() != len(want) {
		t.Fatalf("ring has %d keys, want %d", ring.Len(), len(want))
	}
	for i, k := range ring.Keys() {
		if k.Name != want[i] {
			t.Errorf("key %d = %s, want %s", i, k.Name, want[i])
		}
	}
	fi, _ := os.Stat(a)
	if !ring.Current().Created.Equal(fi.ModTime()) {
		t.Errorf("created = %v, want the file mtime %v", ring.Current().Created, fi.ModTime())
	}
}

func TestFileSourceStartRefusesBadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	writeFile(t, open, rawKeys(48, 1, 1), 0o644)
	h := NewHolder(HolderConfig{})
	s, err := NewFileSource(h, FileConfig{Paths: []string{open}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	var me *FileModeError
	if !errors.As(err, &me) || me.Path != open {
		t.Fatalf("Start = %v, want a FileModeError for %s", err, open)
	}
	if h.Ring() != nil {
		t.Error("a ring was published from a refused file")
	}
	s.Close()
}

// TestFileSourceReloadOnWrite replaces the key file atomically; the fsnotify
// watch must reload it without any call from the test.
func TestFileSourceReloadOnWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ticket.key")
	writeFile(t, path, rawKeys(48, 1, 1), 0o600)
	_, h, reloads := startFileSource(t, FileConfig{Paths: []string{path}})
	old := h.Ring().Current()

	if err := WriteKeyFile(path, FormatBinary, KeySize80, 2, &seqReader{n: 500}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	waitFor(t, reloads, "reload after write", func(err error) bool {
		return err == nil && h.Ring().Current().Name == firstName(raw)
	})
	if h.Ring().Len() != 2 {
		t.Errorf("ring has %d keys after reload, want 2", h.Ring().Len())
	}
	if h.Ring().Lookup(old.Name) != nil {
		t.Error("the replaced key is still in the ring")
	}

	// A non-atomic write (truncate, then write) must end in the new keys
	// too, even if a reload in between saw a partial file.
	raw2 := rawKeys(48, 3, 900)
	writeFile(t, path, raw2, 0o600)
	waitFor(t, reloads, "reload after in-place write", func(err error) bool {
		return err == nil && h.Ring().Current().Name == firstName(raw2) && h.Ring().Len() == 3
	})
}

// TestFileSourceKubernetesSecretSwap mimics how the kubelet updates a Secret
// volume: the file is a symlink through ..data, and ..data is atomically
// replaced by a symlink to a new timestamped directory.
func TestFileSourceKubernetesSecretSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mk := func(version string, raw []byte) {
		d := filepath.Join(dir, version)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, "ticket.key"), raw, 0o400)
	}
	swap := func(version string) {
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	raw1 := rawKeys(80, 1, 1)
	mk("..2026_01_01_00_00_00.1", raw1)
	swap("..2026_01_01_00_00_00.1")
	path := filepath.Join(dir, "ticket.key")
	if err := os.Symlink(filepath.Join("..data", "ticket.key"), path); err != nil {
		t.Fatal(err)
	}
	_, h, reloads := startFileSource(t, FileConfig{Paths: []string{path}})
	if h.Ring().Current().Name != firstName(raw1) {
		t.Fatal("initial key not loaded through the symlinks")
	}

	raw2 := rawKeys(80, 2, 77)
	mk("..2026_01_01_01_00_00.2", raw2)
	swap("..2026_01_01_01_00_00.2")
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1"))
	waitFor(t, reloads, "reload after ..data swap", func(err error) bool {
		return err == nil && h.Ring().Current().Name == firstName(raw2)
	})
	if h.Ring().Len() != 2 {
		t.Errorf("ring has %d keys, want 2", h.Ring().Len())
	}
}

// TestFileSourceExplicitReload is the SIGHUP path, with the watch off: a bad
// file keeps the old ring and counts a failure; a good one is taken.
func TestFileSourceExplicitReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ticket.key")
	raw1 := rawKeys(48, 2, 1)
	writeFile(t, path, raw1, 0o600)
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, h, _ := startFileSource(t, FileConfig{Paths: []string{path}, DisableWatch: true, Metrics: m})
	before := h.Ring()

	tests := []struct {
		name    string
		data    []byte
		mode    os.FileMode
		wantErr string
	}{
		{"truncated", raw1[:50], 0o600, "size 50 bytes"},
		{"made readable", raw1, 0o644, "chmod 600"},
		{"emptied", nil, 0o600, "file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			writeFile(t, path, tt.data, tt.mode)
			err := s.Reload()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Reload = %v, want %q", err, tt.wantErr)
			}
			if h.Ring() != before || isZero(before.Current()) {
				t.Fatal("a failed reload replaced or damaged the ring")
			}
			if !s.Degraded() {
				t.Error("not degraded after a failed reload")
			}
		})
	}
	if got := counterValue(t, m, "file", "failure"); got != float64(len(tests)) {
		t.Errorf("failure count = %v, want %d", got, len(tests))
	}

	// Same content again: no new ring, but healthy.
	writeFile(t, path, raw1, 0o600)
	os.Chtimes(path, before.Current().Created, before.Current().Created)
	if err := s.Reload(); err != nil || h.Ring() != before || s.Degraded() {
		t.Fatalf("reload of unchanged keys: %v, same ring %v, degraded %v", err, h.Ring() == before, s.Degraded())
	}

	raw2 := rawKeys(48, 1, 99)
	writeFile(t, path, raw2, 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if h.Ring().Current().Name != firstName(raw2) || s.Degraded() {
		t.Error("a good reload was not taken")
	}
	if got := counterValue(t, m, "file", "success"); got != 3 {
		t.Errorf("success count = %v, want 3 (start, unchanged, new)", got)
	}
}
