package ticketkeys

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/aesgcm"
)

// KEKSize is the size of a key-encryption key file: 32 raw bytes, an
// AES-256 key (for example `head -c 32 /dev/urandom > kek; chmod 600 kek`).
const KEKSize = 32

// ErrUnwrap means a stored ticket key failed authentication under the
// key-encryption key: most likely the nodes use different KEK files, or the
// value was tampered with. Such a value is never used.
var ErrUnwrap = errors.New("ticketkeys: stored ticket key does not unwrap: is the key-encryption key the same on every node?")

// Wrapped value layout: version(1) | nonce(12) | AES-256-GCM(name(16) | raw(32)),
// with wrapAD and the epoch as additional data, so a value moved to another
// epoch's slot, or written by another format version, does not open.
const (
	wrapVersion = 1
	rawSize     = 32
	nonceSize   = 12
	wrapAD      = "edgeproxy/v1/stek"
	wrappedSize = 1 + nonceSize + NameSize + rawSize + 16
)

// loadKEK reads a key-encryption key file with the same rules as key files:
// owner-only, exactly KEKSize bytes.
func loadKEK(path string) (cipher.AEAD, error) {
	data, _, err := ReadSecretFile(path, KEKSize)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	if len(data) != KEKSize {
		return nil, fmt.Errorf("ticketkeys: key-encryption key file %q is %d bytes: want exactly %d random bytes", path, len(data), KEKSize)
	}
	return newKEK(data)
}

func newKEK(key []byte) (cipher.AEAD, error) {
	aead, err := aesgcm.New(key)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: key-encryption key: %w", err)
	}
	return aead, nil
}

func wrapAdditionalData(epoch int64) []byte {
	ad := make([]byte, 0, len(wrapAD)+9)
	ad = append(ad, wrapAD...)
	ad = append(ad, wrapVersion)
	return binary.BigEndian.AppendUint64(ad, uint64(epoch))
}

// newEpochKey generates the key of an epoch and its wrapped form. The name is
// the epoch (8 bytes, big-endian) followed by 8 random bytes, so a ticket's
// key name tells an operator which epoch sealed it.
func newEpochKey(kek cipher.AEAD, rnd io.Reader, epoch int64, created time.Time) (*Key, []byte, error) {
	var plain [NameSize + rawSize]byte
	defer clear(plain[:])
	binary.BigEndian.PutUint64(plain[:8], uint64(epoch))
	if _, err := io.ReadFull(rnd, plain[8:]); err != nil {
		return nil, nil, fmt.Errorf("ticketkeys: generating key for epoch %d: %w", epoch, err)
	}
	blob := make([]byte, 1+nonceSize, wrappedSize)
	blob[0] = wrapVersion
	if _, err := io.ReadFull(rnd, blob[1:]); err != nil {
		return nil, nil, fmt.Errorf("ticketkeys: generating nonce for epoch %d: %w", epoch, err)
	}
	blob = kek.Seal(blob, blob[1:1+nonceSize], plain[:], wrapAdditionalData(epoch))
	k, err := keyFromPlain(plain[:], created)
	if err != nil {
		return nil, nil, err
	}
	return k, blob, nil
}

// unwrapEpochKey opens a stored value for epoch. Any failure wraps ErrUnwrap.
func unwrapEpochKey(kek cipher.AEAD, blob []byte, epoch int64, created time.Time) (*Key, error) {
	if len(blob) != wrappedSize || blob[0] != wrapVersion {
		return nil, fmt.Errorf("ticketkeys: stored key for epoch %d is malformed (%d bytes, version %d): %w",
			epoch, len(blob), firstByte(blob), ErrUnwrap)
	}
	plain, err := kek.Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], wrapAdditionalData(epoch))
	defer clear(plain)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: opening stored key for epoch %d: %w", epoch, ErrUnwrap)
	}
	if binary.BigEndian.Uint64(plain[:8]) != uint64(epoch) {
		return nil, fmt.Errorf("ticketkeys: stored key for epoch %d names another epoch: %w", epoch, ErrUnwrap)
	}
	return keyFromPlain(plain, created)
}

func keyFromPlain(plain []byte, created time.Time) (*Key, error) {
	k := &Key{Created: created}
	copy(k.Name[:], plain[:NameSize])
	var err error
	if k.Secret, err = DeriveSecret(plain[NameSize:]); err != nil {
		return nil, err
	}
	return k, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
