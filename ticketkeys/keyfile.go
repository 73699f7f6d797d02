package ticketkeys

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/secretfile"
)

// Key file sizes, in the nginx (ssl_session_ticket_key) and HAProxy layout:
// a 16-byte name followed by 32 or 64 bytes of secret material.
const (
	KeySize48 = 48
	KeySize80 = 80
)

// maxKeyFileSize bounds what is read from a key file: MaxKeys 80-byte keys
// in the larger of the two layouts, base64 lines ending in CRLF.
var maxKeyFileSize = MaxKeys * (base64.StdEncoding.EncodedLen(KeySize80) + 2)

// KeyFileFormat names the layout of a key file. Loaders tell the two apart by
// content: a file made only of base64 characters and line breaks is base64
// lines, anything else is binary. (Random binary keys are all base64
// characters with a probability below 2^-90 for a single 48-byte key.)
type KeyFileFormat string

const (
	// FormatBase64 is HAProxy's tls-ticket-keys layout: one key per line,
	// base64 encoded (48 or 80 bytes decoded, one size per file), oldest
	// first. As in HAProxy, the penultimate key seals and the last one is
	// the next key, so every node can open its tickets before any node seals
	// with it; a file of one key seals with that key. Empty lines are
	// skipped. It is what `edgeproxy keys gen` writes by default, and it is
	// never ambiguous.
	FormatBase64 KeyFileFormat = "base64"
	// FormatBinary is nginx's ssl_session_ticket_key layout: raw 48- or
	// 80-byte keys, concatenated, newest first; the first key seals. A file
	// whose size is a multiple of both (240, 480, ...) needs its key size
	// set (FileConfig.KeySize).
	FormatBinary KeyFileFormat = "binary"
)

// FileModeError reports a key file that its group or others may read; see
// internal/secretfile for the rule.
type FileModeError = secretfile.ModeError

// ReadSecretFile reads a file holding key material under the rule of
// internal/secretfile: regular, at most limit bytes, and readable by its
// owner alone (or by its group, for a root-owned Kubernetes Secret read by
// a non-root edgeproxy). A file that breaks the rule gives a *FileModeError.
// The caller should clear the data when done.
func ReadSecretFile(path string, limit int64) ([]byte, fs.FileInfo, error) {
	return secretfile.Read(path, limit)
}

// keySizeOf returns the per-key size of a key file of n bytes. keySize 0
// infers it from n; otherwise it must be KeySize48 or KeySize80.
func keySizeOf(n, keySize int) (int, error) {
	if n == 0 {
		return 0, errors.New("file is empty: want one or more 48- or 80-byte keys")
	}
	switch keySize {
	case KeySize48, KeySize80:
		if n%keySize != 0 {
			return 0, fmt.Errorf("size %d bytes is not a multiple of the %d-byte key size", n, keySize)
		}
		return keySize, nil
	case 0:
	default:
		return 0, fmt.Errorf("key size %d is not allowed: want 48 or 80", keySize)
	}
	d48, d80 := n%KeySize48 == 0, n%KeySize80 == 0
	switch {
	case d48 && d80:
		return 0, fmt.Errorf("size %d bytes splits into either 48- or 80-byte keys: set key_size to 48 or 80, or rewrite the file as base64 lines (one key per line)", n)
	case d48:
		return KeySize48, nil
	case d80:
		return KeySize80, nil
	}
	return 0, fmt.Errorf("size %d bytes is not a whole number of keys: want 48 or 80 bytes per key (name 16 | secret 32 or 64), several keys concatenated", n)
}

// keyFile is one parsed key file: its keys in file order, and which of them
// seals when the file is the first one loaded.
type keyFile struct {
	keys   []*Key
	size   int
	format KeyFileFormat
	seal   int
}

// ringOrder returns the file's keys in ring order: the sealing key first, then
// the others newest first.
func (f keyFile) ringOrder() []*Key {
	out := []*Key{f.keys[f.seal]}
	if f.format == FormatBinary {
		return append(out, f.keys[1:]...)
	}
	for i := len(f.keys) - 1; i >= 0; i-- {
		if i != f.seal {
			out = append(out, f.keys[i])
		}
	}
	return out
}

// parseKeyFile splits a key file, in either layout (see KeyFileFormat), into
// keys: each is a 16-byte name and the secret derived from the rest. keySize
// 0 infers the key size. It never retains data, which the caller should
// clear. Errors carry no path; the caller adds it.
func parseKeyFile(data []byte, keySize int, created time.Time) (keyFile, error) {
	if !isBase64Lines(data) {
		return parseBinaryKeys(data, keySize, created)
	}
	raw, size, err := decodeBase64Lines(data, keySize)
	defer clear(raw)
	if err != nil {
		return keyFile{}, err
	}
	f, err := parseBinaryKeys(raw, size, created)
	if err != nil {
		return keyFile{}, err
	}
	f.format = FormatBase64
	f.seal = max(len(f.keys)-2, 0)
	return f, nil
}

// isBase64Lines reports whether data holds nothing but base64 characters and
// line breaks, and at least one base64 character.
func isBase64Lines(data []byte) bool {
	seen := false
	for _, c := range data {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '=':
			seen = true
		case c == '\n', c == '\r':
		default:
			return false
		}
	}
	return seen
}

// decodeBase64Lines decodes one key per line and returns the keys
// concatenated and their size. The caller clears the result.
func decodeBase64Lines(data []byte, keySize int) ([]byte, int, error) {
	var raw []byte
	size, n := keySize, 0
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
	defer clear(buf)
	fail := func(err error) ([]byte, int, error) {
		clear(raw)
		return nil, 0, err
	}
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			continue
		}
		m, err := base64.StdEncoding.Decode(buf, line)
		if err != nil {
			return fail(fmt.Errorf("line %d: not a base64 key: %w", i+1, err))
		}
		switch {
		case m != KeySize48 && m != KeySize80:
			return fail(fmt.Errorf("line %d: key of %d bytes: want 48 or 80", i+1, m))
		case size == 0:
			size = m
		case m != size:
			return fail(fmt.Errorf("line %d: %d-byte key in a file of %d-byte keys: one size per file, as HAProxy requires", i+1, m, size))
		}
		if n++; n > MaxKeys {
			return fail(fmt.Errorf("more than the %d keys a ring holds", MaxKeys))
		}
		raw = append(raw, buf[:m]...)
	}
	if n == 0 {
		return fail(errors.New("file has no keys: want one base64 key per line"))
	}
	return raw, size, nil
}

// parseBinaryKeys splits concatenated binary keys.
func parseBinaryKeys(data []byte, keySize int, created time.Time) (keyFile, error) {
	size, err := keySizeOf(len(data), keySize)
	if err != nil {
		return keyFile{}, err
	}
	if n := len(data) / size; n > MaxKeys {
		return keyFile{}, fmt.Errorf("%d keys is more than the %d a ring holds", n, MaxKeys)
	}
	keys := make([]*Key, 0, len(data)/size)
	for off := 0; off < len(data); off += size {
		k := &Key{Created: created}
		copy(k.Name[:], data[off:off+NameSize])
		for _, prev := range keys {
			if prev.Name == k.Name {
				zeroKeys(keys)
				return keyFile{}, fmt.Errorf("key %d has the same name %s as an earlier key", off/size, k.Name)
			}
		}
		if k.Secret, err = DeriveSecret(data[off+NameSize : off+size]); err != nil {
			zeroKeys(keys)
			return keyFile{}, err
		}
		keys = append(keys, k)
	}
	return keyFile{keys: keys, size: size, format: FormatBinary}, nil
}

// zeroKeys clears the secrets of keys that were never published.
func zeroKeys(keys []*Key) {
	for _, k := range keys {
		clear(k.Secret[:])
	}
}

// loadedFile is one key file as read from disk.
type loadedFile struct {
	keyFile
	path    string
	modTime time.Time
}

// loadKeyFiles reads and parses paths in order, rejecting names repeated
// across files and more than MaxKeys keys in all.
func loadKeyFiles(paths []string, keySize int) ([]loadedFile, error) {
	var out []loadedFile
	total := 0
	fail := func(err error) ([]loadedFile, error) {
		for _, lf := range out {
			zeroKeys(lf.keys)
		}
		return nil, err
	}
	for _, p := range paths {
		data, fi, err := ReadSecretFile(p, int64(maxKeyFileSize))
		if err != nil {
			return fail(err)
		}
		kf, err := parseKeyFile(data, keySize, fi.ModTime())
		clear(data)
		if err != nil {
			return fail(fmt.Errorf("ticketkeys: key file %q: %w", p, err))
		}
		out = append(out, loadedFile{keyFile: kf, path: p, modTime: fi.ModTime()})
		keys := kf.keys
		for _, k := range keys {
			for _, lf := range out[:len(out)-1] {
				for _, prev := range lf.keys {
					if prev.Name == k.Name {
						return fail(fmt.Errorf("ticketkeys: key file %q: key %s is also in %q", p, k.Name, lf.path))
					}
				}
			}
		}
		if total += len(keys); total > MaxKeys {
			return fail(fmt.Errorf("ticketkeys: key files hold %d keys, more than the %d a ring holds", total, MaxKeys))
		}
	}
	return out, nil
}

// GenerateKeyFile writes count random keys of size bytes each (KeySize48 or
// KeySize80) to w in format (FormatBase64 if empty), the layouts HAProxy
// (base64) and nginx (binary) read and FileSource reads both. A binary file
// whose size would be ambiguous (5 48-byte or 3 80-byte keys are both 240
// bytes) is refused: every file it writes loads without a key size. rnd nil
// means crypto/rand.Reader.
//
// Warning: the output is the raw key material. Whoever reads it can decrypt
// every session ticket sealed with these keys; write it only to a file that
// its owner alone can read (see WriteKeyFile).
func GenerateKeyFile(w io.Writer, format KeyFileFormat, size, count int, rnd io.Reader) error {
	if size != KeySize48 && size != KeySize80 {
		return fmt.Errorf("ticketkeys: key size %d is not allowed: want 48 or 80", size)
	}
	if count < 1 || count > MaxKeys {
		return fmt.Errorf("ticketkeys: key count must be 1..%d, got %d", MaxKeys, count)
	}
	switch format {
	case "", FormatBase64:
	case FormatBinary:
		if (size*count)%(KeySize48*KeySize80/16) == 0 {
			return fmt.Errorf("ticketkeys: %d binary keys of %d bytes would be ambiguous: %d bytes split into either 48- or 80-byte keys; use the base64 format or another count", count, size, size*count)
		}
	default:
		return fmt.Errorf("ticketkeys: key file format %q: want base64 or binary", format)
	}
	buf := make([]byte, size*count)
	defer clear(buf)
	if _, err := io.ReadFull(randReader(rnd), buf); err != nil {
		return fmt.Errorf("ticketkeys: generating key file: %w", err)
	}
	out := buf
	if format != FormatBinary {
		out = make([]byte, 0, count*(base64.StdEncoding.EncodedLen(size)+1))
		defer func() { clear(out) }()
		for off := 0; off < len(buf); off += size {
			out = base64.StdEncoding.AppendEncode(out, buf[off:off+size])
			out = append(out, '\n')
		}
	}
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("ticketkeys: writing key file: %w", err)
	}
	return nil
}

// WriteKeyFile writes a new key file at path with mode 0600, like
// GenerateKeyFile. It writes a temporary file in the same directory and
// renames it over path, so a watching FileSource never reads half a file. An
// existing file at path is replaced.
func WriteKeyFile(path string, format KeyFileFormat, size, count int, rnd io.Reader) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ticketkeys: writing key file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp makes 0600 files; say so in case umask or platform differ.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("ticketkeys: writing key file: %w", err)
	}
	if err := GenerateKeyFile(f, format, size, count, rnd); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("ticketkeys: writing key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ticketkeys: writing key file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("ticketkeys: writing key file: %w", err)
	}
	return nil
}

// KeyInfo describes one key of a key file, without its secret.
type KeyInfo struct {
	// Path is the file the key is in.
	Path string
	// Index is the key's position in the file, from 0.
	Index int
	// Name is the key name in hex.
	Name string
	// Size is the key's size in the file: 48 or 80.
	Size int
	// Format is the file's layout.
	Format KeyFileFormat
	// Sealing is true for the key that seals new tickets: in the first
	// file, its first key (binary) or its penultimate key (base64).
	Sealing bool
	// Modified is the file's modification time, used as the key's creation
	// time.
	Modified time.Time
	// Age is how long ago the file was modified, at inspection.
	Age time.Duration
}

// InspectFile describes the keys of one key file without revealing their
// secrets. It applies the checks FileSource does (mode, size, duplicate
// names), so an error here is the error a FileSource would report.
func InspectFile(path string) ([]KeyInfo, error) {
	return InspectFiles(FileConfig{Paths: []string{path}})
}

// InspectFiles describes the keys cfg would load, in ring order.
func InspectFiles(cfg FileConfig) ([]KeyInfo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	files, err := loadKeyFiles(cfg.Paths, cfg.KeySize)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if cfg.Now != nil {
		now = cfg.Now()
	}
	var out []KeyInfo
	for n, lf := range files {
		for i, k := range lf.keys {
			out = append(out, KeyInfo{
				Path: lf.path, Index: i, Name: k.Name.String(), Size: lf.size, Format: lf.format,
				Sealing: n == 0 && i == lf.seal, Modified: lf.modTime, Age: now.Sub(lf.modTime),
			})
		}
		zeroKeys(lf.keys)
	}
	return out, nil
}
