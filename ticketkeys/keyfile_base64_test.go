package ticketkeys

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// base64Lines encodes concatenated keys of size bytes as HAProxy's
// tls-ticket-keys file: one base64 key per line.
func base64Lines(raw []byte, size int, eol string) []byte {
	var b bytes.Buffer
	for off := 0; off < len(raw); off += size {
		b.WriteString(base64.StdEncoding.EncodeToString(raw[off : off+size]))
		b.WriteString(eol)
	}
	return b.Bytes()
}

func TestParseBase64KeyFile(t *testing.T) {
	t.Parallel()
	created := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name     string
		raw      []byte // the keys, concatenated
		data     []byte // the file
		keySize  int
		wantSize int
		wantSeal int
		wantErr  string
	}{
		{"one 80-byte key", rawKeys(80, 1, 1), nil, 0, 80, 0, ""},
		{"one 48-byte key", rawKeys(48, 1, 1), nil, 0, 48, 0, ""},
		{"two keys: the first seals", rawKeys(80, 2, 1), nil, 0, 80, 0, ""},
		{"three 80-byte keys: 240 bytes, not ambiguous", rawKeys(80, 3, 1), nil, 0, 80, 1, ""},
		{"five 48-byte keys: 240 bytes, not ambiguous", rawKeys(48, 5, 1), nil, 0, 48, 3, ""},
		{"CRLF and blank lines", rawKeys(48, 3, 2), []byte("\r\n" + string(base64Lines(rawKeys(48, 3, 2), 48, "\r\n\n"))), 0, 48, 1, ""},
		{"no final newline", rawKeys(80, 2, 3), bytes.TrimSuffix(base64Lines(rawKeys(80, 2, 3), 80, "\n"), []byte("\n")), 0, 80, 0, ""},
		{"key size given", rawKeys(48, 2, 1), nil, 48, 48, 0, ""},
		{"key size disagrees", nil, base64Lines(rawKeys(48, 2, 1), 48, "\n"), 80, 0, 0, "line 1: 48-byte key in a file of 80-byte keys"},
		{"mixed sizes", nil, append(base64Lines(rawKeys(80, 1, 1), 80, "\n"), base64Lines(rawKeys(48, 1, 9), 48, "\n")...), 0, 0, 0, "line 2: 48-byte key in a file of 80-byte keys"},
		{"wrong size", nil, base64Lines(rawKeys(32, 1, 1), 32, "\n"), 0, 0, 0, "line 1: key of 32 bytes: want 48 or 80"},
		{"bad base64", nil, append(base64Lines(rawKeys(48, 1, 1), 48, "\n"), "A===\n"...), 0, 0, 0, "line 2: not a base64 key"},
		{"only line breaks", nil, []byte("\n\r\n"), 0, 0, 0, "size 3 bytes is not a whole number of keys"},
		{"too many keys", nil, base64Lines(rawKeys(48, MaxKeys+1, 1), 48, "\n"), 0, 0, 0, "more than the 64 keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.data
			if data == nil {
				data = base64Lines(tt.raw, tt.wantSize, "\n")
			}
			kf, err := parseKeyFile(data, tt.keySize, created)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kf.format != FormatBase64 || kf.size != tt.wantSize || kf.seal != tt.wantSeal || len(kf.keys) != len(tt.raw)/tt.wantSize {
				t.Fatalf("got %d %s keys of %d bytes sealing with %d, want %d of %d sealing with %d",
					len(kf.keys), kf.format, kf.size, kf.seal, len(tt.raw)/tt.wantSize, tt.wantSize, tt.wantSeal)
			}
			// The same keys, read from the binary layout, are the same keys.
			bin, err := parseKeyFile(tt.raw, tt.wantSize, created)
			if err != nil {
				t.Fatal(err)
			}
			for i := range bin.keys {
				if kf.keys[i].Name != bin.keys[i].Name || kf.keys[i].Secret != bin.keys[i].Secret || !kf.keys[i].Created.Equal(created) {
					t.Errorf("key %d differs from the binary layout of the same bytes", i)
				}
			}
		})
	}
}

// TestBase64RingOrder: HAProxy seals with the penultimate key; the ring puts
// it first and keeps every key.
func TestBase64RingOrder(t *testing.T) {
	t.Parallel()
	raw := rawKeys(80, 4, 5)
	kf, err := parseKeyFile(base64Lines(raw, 80, "\n"), 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var got []Name
	for _, k := range kf.ringOrder() {
		got = append(got, k.Name)
	}
	want := []Name{firstName(raw[160:]), firstName(raw[240:]), firstName(raw[80:]), firstName(raw)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ring order %v, want %v (penultimate, last, then older keys newest first)", got, want)
	}
}

// TestEveryGeneratedKeyFileLoads writes every count and size in both formats
// (refusing only ambiguous binary ones) and loads each the way a FileSource
// does, without a key size.
func TestEveryGeneratedKeyFileLoads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, format := range []KeyFileFormat{"", FormatBase64, FormatBinary} {
		for _, size := range []int{KeySize48, KeySize80} {
			for count := 1; count <= 12; count++ {
				path := filepath.Join(dir, fmt.Sprintf("%s-%d-%d.key", format, size, count))
				err := WriteKeyFile(path, format, size, count, nil)
				if format == FormatBinary && (size*count)%240 == 0 {
					if err == nil {
						t.Errorf("%s %d×%d: wrote an ambiguous binary file", format, count, size)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%q %d×%d: %v", format, count, size, err)
				}
				infos, err := InspectFile(path)
				if err != nil {
					t.Fatalf("%q %d×%d: %v", format, count, size, err)
				}
				if len(infos) != count || infos[0].Size != size {
					t.Errorf("%q %d×%d: loaded %d keys of %d bytes", format, count, size, len(infos), infos[0].Size)
				}
			}
		}
	}
}
