// Package ticketkeys holds the session ticket key ring: which key seals new
// tickets, which keys still open old ones, and the sources that produce and
// rotate rings (generated in memory, key files, a shared Redis store).
//
// Wiring: create a Holder, give it to one Source (NewGenerateSource,
// NewFileSource or NewRedisSource), and Start the source before serving;
// handshakes call Holder.Ring. On SIGHUP call Reload on a source that is a
// Reloader. Health checks read Degraded or Status. On shutdown Close the
// source, and Close the Holder once the TLS server has stopped.
//
// Warning: ticket keys are long-lived secrets. Anyone who holds one can
// decrypt every session sealed under it, and so every recorded connection that
// resumed with such a ticket, which defeats forward secrecy for that window.
// Key bytes are never logged, key files that others can read are refused, and
// keys that leave the ring are zeroed.
package ticketkeys

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

const (
	// NameSize is the size of a key name, the public part of a key that a
	// ticket carries in the clear so the opener finds its key.
	NameSize = 16
	// SecretSize is the size of the AEAD master secret derived from a key.
	SecretSize = 32
	// MaxKeys caps the number of keys in a ring.
	MaxKeys = 64
)

// Name identifies a key. It is not secret.
type Name [NameSize]byte

// String returns the name in hex.
func (n Name) String() string { return fmt.Sprintf("%x", n[:]) }

// Key is one ticket key: a public name and a secret. A Key published in a Ring
// must not be modified, except by the Holder that zeroes it after it retires.
type Key struct {
	// Name is sent in the clear in every ticket sealed with this key.
	Name Name
	// Secret is the AEAD master secret. It is derived from raw key material
	// with DeriveSecret, so a 48- or 80-byte nginx key maps to one secret.
	Secret [SecretSize]byte
	// Created is when the key was generated or first seen (file mtime for
	// key files). Zero when unknown.
	Created time.Time
}

// secretInfo binds derived secrets to this use, so the same key file used by
// nginx (which uses the bytes directly as HMAC and AES keys) and by edgeproxy
// never shares cryptographic keys across the two formats.
const secretInfo = "edgeproxy ticket key v1"

// DeriveSecret derives the AEAD master secret from a key's secret material
// (everything after the 16-byte name in an nginx/HAProxy key).
func DeriveSecret(material []byte) ([SecretSize]byte, error) {
	var out [SecretSize]byte
	if len(material) < 16 {
		return out, fmt.Errorf("ticketkeys: key material must be at least 16 bytes, got %d", len(material))
	}
	k, err := hkdf.Key(sha256.New, material, nil, secretInfo, SecretSize)
	if err != nil {
		return out, fmt.Errorf("ticketkeys: deriving secret: %w", err)
	}
	copy(out[:], k)
	clear(k)
	return out, nil
}

// Ring is an immutable snapshot of ticket keys, newest first: the first key
// seals new tickets and every key opens tickets sealed under it. Rings are
// published whole (see Holder) and never edited after NewRing returns, so a
// *Ring is safe for concurrent use.
type Ring struct {
	keys []*Key
}

// ErrEmptyRing is returned by NewRing for a ring without keys.
var ErrEmptyRing = errors.New("ticketkeys: a ring needs at least one key")

// NewRing returns a ring of keys, the first of which seals. It rejects an
// empty set, more than MaxKeys keys, and two keys with the same name. The
// ring keeps the pointers it is given: callers hand the keys over.
func NewRing(keys ...*Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, ErrEmptyRing
	}
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("ticketkeys: a ring holds at most %d keys, got %d", MaxKeys, len(keys))
	}
	for i, k := range keys {
		if k == nil {
			return nil, fmt.Errorf("ticketkeys: key %d is nil", i)
		}
		for _, prev := range keys[:i] {
			if prev.Name == k.Name {
				return nil, fmt.Errorf("ticketkeys: key %s appears twice in the ring", k.Name)
			}
		}
	}
	return &Ring{keys: append([]*Key(nil), keys...)}, nil
}

// Current returns the key that seals new tickets.
func (r *Ring) Current() *Key { return r.keys[0] }

// Lookup returns the key with the given name, or nil. The ring holds at most
// MaxKeys keys, so the scan is bounded: O(1) in the size of the fleet or the
// number of tickets, and faster than a map for rings of a few keys.
func (r *Ring) Lookup(name Name) *Key {
	for _, k := range r.keys {
		if k.Name == name {
			return k
		}
	}
	return nil
}

// Len returns the number of keys in the ring.
func (r *Ring) Len() int { return len(r.keys) }

// Keys returns the ring's keys, newest first. The slice is a copy; the keys
// are shared and must not be modified.
func (r *Ring) Keys() []*Key { return append([]*Key(nil), r.keys...) }
