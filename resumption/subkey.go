package resumption

import (
	"crypto/sha256"

	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// ticketSubkey returns HKDF-SHA256(secret, salt, ticketSubkeyInfo) of 32
// bytes (RFC 5869), the per-ticket key of the ticket format, byte for byte
// what crypto/hkdf.Key derives (TestTicketSubkeyMatchesHKDF).
//
// It is written out with sha256.Sum256 on stack buffers because crypto/hkdf
// allocates about 13 times per call (an HMAC and its two SHA-256 states,
// twice), and a resumed TLS 1.2 handshake derives two subkeys: the ticket
// it opens and the fresh one it issues (#13). With a salt of at most one
// SHA-256 block and a 32-byte output, HKDF is exactly two HMACs:
//
//	PRK = HMAC(salt, secret)                  extract
//	OKM = HMAC(PRK, info || 0x01)             expand, first and only block
//	HMAC(K, m) = SHA-256((K^opad) || SHA-256((K^ipad) || m)), K zero-padded
//
// The caller clears the result once it is expanded into a cipher.
func ticketSubkey(secret *[ticketkeys.SecretSize]byte, salt []byte) [sha256.Size]byte {
	prk := hmacSHA256(salt, secret[:], nil)
	defer clear(prk[:])
	return hmacSHA256(prk[:], []byte(ticketSubkeyInfo), []byte{1})
}

// hmacBlock is SHA-256's block size, the size of an HMAC key pad.
const hmacBlock = 64

// hmacSHA256 returns HMAC-SHA256(key, m1 || m2) for a key of at most
// hmacBlock bytes and messages that fit one buffer with the pad; both hold
// for the fixed sizes ticketSubkey uses (a 16-byte salt or a 32-byte PRK;
// a 32-byte secret or the 19-byte info and its counter).
func hmacSHA256(key, m1, m2 []byte) [sha256.Size]byte {
	var buf [hmacBlock + ticketkeys.SecretSize]byte
	copy(buf[:], key)
	for i := range hmacBlock {
		buf[i] ^= 0x36
	}
	n := hmacBlock + copy(buf[hmacBlock:], m1)
	n += copy(buf[n:], m2)
	inner := sha256.Sum256(buf[:n])
	clear(buf[:])
	copy(buf[:], key)
	for i := range hmacBlock {
		buf[i] ^= 0x5c
	}
	copy(buf[hmacBlock:], inner[:])
	out := sha256.Sum256(buf[:hmacBlock+sha256.Size])
	clear(buf[:])
	clear(inner[:])
	return out
}
