// Package aesgcm builds the AES-GCM AEADs that seal tickets, stateful
// sessions and wrapped ticket keys.
package aesgcm

import (
	"crypto/aes"
	"crypto/cipher"
)

// New returns AES-GCM with a 12-byte nonce under key, which must be 16, 24
// or 32 bytes (AES-128, -192 or -256); its error is crypto/aes's, which the
// caller wraps with what the key is for.
func New(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
