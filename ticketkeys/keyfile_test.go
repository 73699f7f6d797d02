package ticketkeys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawKeys returns count deterministic keys of size bytes each, concatenated.
func rawKeys(size, count int, seed uint64) []byte {
	b := make([]byte, size*count)
	(&seqReader{n: seed}).Read(b)
	return b
}

// writeFile writes data with mode, bypassing the umask.
func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestParseKeyFile(t *testing.T) {
	t.Parallel()
	created := time.Unix(1_700_000_000, 0)
	dup := rawKeys(48, 2, 1)
	copy(dup[48:64], dup[:16])
	tests := []struct {
		name     string
		data     []byte
		keySize  int
		wantKeys int
		wantSize int
		wantErr  string
	}{
		{"one 48-byte key", rawKeys(48, 1, 1), 0, 1, 48, ""},
		{"one 80-byte key", rawKeys(80, 1, 1), 0, 1, 80, ""},
		{"three 48-byte keys", rawKeys(48, 3, 1), 0, 3, 48, ""},
		{"two 80-byte keys", rawKeys(80, 2, 1), 0, 2, 80, ""},
		{"240 bytes as 48-byte keys", rawKeys(48, 5, 1), 48, 5, 48, ""},
		{"240 bytes as 80-byte keys", rawKeys(80, 3, 1), 80, 3, 80, ""},
		{"240 bytes ambiguous", rawKeys(48, 5, 1), 0, 0, 0, "size 240 bytes splits into either 48- or 80-byte keys: set key_size"},
		{"empty", nil, 0, 0, 0, "file is empty"},
		{"32 bytes", make([]byte, 32), 0, 0, 0, "size 32 bytes is not a whole number of keys: want 48 or 80 bytes per key"},
		{"49 bytes", make([]byte, 49), 0, 0, 0, "size 49 bytes is not a whole number of keys"},
		{"96 bytes with key size 80", rawKeys(48, 2, 1), 80, 0, 0, "size 96 bytes is not a multiple of the 80-byte key size"},
		{"bad key size", rawKeys(48, 1, 1), 64, 0, 0, "key size 64 is not allowed: want 48 or 80"},
		{"duplicate names", dup, 0, 0, 0, "key 1 has the same name"},
		{"too many keys", rawKeys(48, MaxKeys+1, 1), 48, 0, 0, "65 keys is more than the 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kf, err := parseKeyFile(tt.data, tt.keySize, created)
			keys, size := kf.keys, kf.size
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != tt.wantKeys || size != tt.wantSize {
				t.Fatalf("got %d keys of %d bytes, want %d of %d", len(keys), size, tt.wantKeys, tt.wantSize)
			}
			for i, k := range keys {
				raw := tt.data[i*size : (i+1)*size]
				if !bytes.Equal(k.Name[:], raw[:NameSize]) {
					t.Errorf("key %d name = %s, want the first 16 bytes", i, k.Name)
				}
				want, _ := DeriveSecret(raw[NameSize:])
				if k.Secret != want {
					t.Errorf("key %d secret is not DeriveSecret of the rest", i)
				}
				if !k.Created.Equal(created) {
					t.Errorf("key %d created %v", i, k.Created)
				}
			}
		})
	}
}

func TestParseKeyFileSizesDeriveDifferentSecrets(t *testing.T) {
	t.Parallel()
	// An 80-byte key and its first 48 bytes share a name but must not
	// share a secret.
	raw := rawKeys(80, 1, 7)
	f80, err := parseKeyFile(raw, 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	f48, err := parseKeyFile(raw[:48], 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if k80, k48 := f80.keys, f48.keys; k80[0].Name != k48[0].Name || k80[0].Secret == k48[0].Secret {
		t.Error("48- and 80-byte keys with the same prefix must have the same name and different secrets")
	}
}

func FuzzParseKeyFile(f *testing.F) {
	f.Add(rawKeys(48, 1, 1), 0)
	f.Add(rawKeys(80, 1, 1), 0)
	f.Add(rawKeys(48, 5, 1), 0)
	f.Add(rawKeys(48, 5, 1), 48)
	f.Add(rawKeys(80, 2, 1), 80)
	f.Add([]byte{}, 0)
	f.Add(make([]byte, 96), 0) // duplicate all-zero names
	f.Add([]byte("not a key"), 64)
	f.Add(base64Lines(rawKeys(80, 3, 1), 80, "\n"), 0)
	f.Add([]byte("QUJD\r\n\n===="), 0)
	f.Fuzz(func(t *testing.T, data []byte, keySize int) {
		kf, err := parseKeyFile(data, keySize, time.Time{})
		keys, size := kf.keys, kf.size
		if err != nil {
			if keys != nil {
				t.Fatal("keys returned with an error")
			}
			return
		}
		if size != KeySize48 && size != KeySize80 {
			t.Fatalf("accepted key size %d", size)
		}
		if kf.format == FormatBinary && len(keys)*size != len(data) || len(keys) == 0 || len(keys) > MaxKeys {
			t.Fatalf("%d keys of %d bytes from %d bytes", len(keys), size, len(data))
		}
		if _, err := NewRing(kf.ringOrder()...); err != nil {
			t.Fatalf("parsed keys do not make a ring: %v", err)
		}
	})
}

func TestLoadKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := filepath.Join(dir, "a.key")
	b := filepath.Join(dir, "b.key")
	open := filepath.Join(dir, "open.key")
	groupRead := filepath.Join(dir, "group.key")
	empty := filepath.Join(dir, "empty.key")
	short := filepath.Join(dir, "short.key")
	sameAsA := filepath.Join(dir, "same.key")
	writeFile(t, a, rawKeys(48, 2, 1), 0o600)
	writeFile(t, b, rawKeys(80, 1, 100), 0o400)
	writeFile(t, open, rawKeys(48, 1, 200), 0o644)
	writeFile(t, groupRead, rawKeys(48, 1, 300), 0o640)
	writeFile(t, empty, nil, 0o600)
	writeFile(t, short, make([]byte, 47), 0o600)
	writeFile(t, sameAsA, rawKeys(48, 1, 1), 0o600)

	tests := []struct {
		name     string
		paths    []string
		wantKeys int
		wantErr  string
		wantMode os.FileMode
	}{
		{"one file", []string{a}, 2, "", 0},
		{"list of files, mixed sizes", []string{a, b}, 3, "", 0},
		{"world readable", []string{open}, 0, `"` + open + `" has mode 0644: group and others must have no access (chmod 600`, 0o644},
		{"group readable", []string{a, groupRead}, 0, "has mode 0640", 0o640},
		{"empty", []string{empty}, 0, `key file "` + empty + `": file is empty`, 0},
		{"wrong size", []string{short}, 0, "size 47 bytes is not a whole number of keys", 0},
		{"missing", []string{filepath.Join(dir, "nope")}, 0, "no such file", 0},
		{"directory", []string{dir}, 0, "not a regular file", 0},
		{"duplicate across files", []string{a, sameAsA}, 0, `is also in "` + a + `"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := loadKeyFiles(tt.paths, 0)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				var me *FileModeError
				if got := errors.As(err, &me); got != (tt.wantMode != 0) || got && me.Mode.Perm() != tt.wantMode {
					t.Errorf("FileModeError = %v (%v), want mode %#o", got, me, tt.wantMode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, lf := range files {
				n += len(lf.keys)
			}
			if n != tt.wantKeys {
				t.Fatalf("%d keys, want %d", n, tt.wantKeys)
			}
		})
	}
}

func TestGenerateAndInspectKeyFile(t *testing.T) {
	t.Parallel()
	for _, size := range []int{KeySize48, KeySize80} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ticket.key")
			// 4 keys: 3 of 80 bytes would be 240 bytes, which needs
			// KeySize (see TestInspectFilesAmbiguousNeedsKeySize).
			const count = 4
			if err := WriteKeyFile(path, FormatBinary, size, count, &seqReader{}); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 || fi.Size() != int64(count*size) {
				t.Fatalf("wrote mode %v size %d, want 0600 and %d", fi.Mode(), fi.Size(), count*size)
			}
			raw, _ := os.ReadFile(path)
			infos, err := InspectFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != count {
				t.Fatalf("%d infos, want %d", len(infos), count)
			}
			for i, in := range infos {
				wantName := fmt.Sprintf("%x", raw[i*size:i*size+NameSize])
				if in.Name != wantName || in.Size != size || in.Index != i || in.Path != path ||
					in.Sealing != (i == 0) || !in.Modified.Equal(fi.ModTime()) || in.Age < 0 {
					t.Errorf("info %d = %+v", i, in)
				}
				// Nothing but the public name may be printed.
				secretHex := fmt.Sprintf("%x", raw[i*size+NameSize:(i+1)*size])
				if strings.Contains(fmt.Sprintf("%+v", in), secretHex[:16]) {
					t.Errorf("info %d reveals secret material", i)
				}
			}
		})
	}
}

func TestGenerateKeyFileRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		format      KeyFileFormat
		size, count int
		wantErr     string
	}{
		{"size 64", "", 64, 1, "key size 64 is not allowed"},
		{"count 0", "", 48, 0, "key count must be 1..64, got 0"},
		{"count 65", "", 48, 65, "key count must be 1..64, got 65"},
		{"unknown format", "pem", 48, 1, `key file format "pem": want base64 or binary`},
		{"ambiguous binary 48", FormatBinary, 48, 5, "5 binary keys of 48 bytes would be ambiguous"},
		{"ambiguous binary 80", FormatBinary, 80, 3, "3 binary keys of 80 bytes would be ambiguous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := GenerateKeyFile(&buf, tt.format, tt.size, tt.count, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || buf.Len() != 0 {
				t.Fatalf("error = %v (wrote %d bytes), want %q and nothing written", err, buf.Len(), tt.wantErr)
			}
		})
	}
}

func TestInspectFilesAmbiguousNeedsKeySize(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "k")
	writeFile(t, path, rawKeys(48, 5, 1), 0o600)
	if _, err := InspectFile(path); err == nil || !strings.Contains(err.Error(), "set key_size") {
		t.Fatalf("InspectFile = %v, want the ambiguity error", err)
	}
	infos, err := InspectFiles(FileConfig{Paths: []string{path}, KeySize: 80})
	if err != nil || len(infos) != 3 {
		t.Fatalf("with key size 80: %d infos, %v", len(infos), err)
	}
}
