package sessioncache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Every key edgeproxy writes to a shared store comes from this file, under a
// versioned namespace, so a format change can move to v2 without reading v1
// values as v2. Binary parts are hex-encoded: memcached keys must be at most
// 250 bytes with no spaces or control bytes.
const namespace = "edgeproxy/v1/"

// MaxKeyLen is memcached's limit on key length.
const MaxKeyLen = 250

// SessionKey returns the store key for a session id under prefix (which may
// be empty), e.g. "edgeproxy/v1/sess/9f86d081884c7d65".
func SessionKey(prefix string, id []byte) string {
	b := make([]byte, 0, len(prefix)+len(namespace)+5+2*len(id))
	b = append(b, prefix...)
	b = append(b, namespace...)
	b = append(b, "sess/"...)
	b = hex.AppendEncode(b, id)
	return string(b)
}

// TicketKeyKey returns the store key for the ticket key of a rotation epoch.
func TicketKeyKey(prefix string, epoch int64) string {
	return prefix + namespace + "stek/" + strconv.FormatInt(epoch, 10)
}

// CheckKey reports whether key is legal in every store: 1 to MaxKeyLen bytes,
// none of them a space or a control byte.
func CheckKey(key string) error {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return fmt.Errorf("sessioncache: key length must be 1..%d, got %d", MaxKeyLen, len(key))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("sessioncache: key has an illegal byte 0x%02x at %d", c, i)
		}
	}
	return nil
}

// CheckAddr reports whether a is host:port with a host and a port in
// 1..65535, as the stores' addresses must be.
func CheckAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("must be host:port")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("port must be a number in 1..65535")
	}
	return nil
}

// RevocationKey returns the store key of the fleet's revocation generation
// under prefix: a value every revocation replaces, which the nodes poll to
// learn that their local copies may be stale (resumption/stateful).
func RevocationKey(prefix string) string {
	return prefix + namespace + "revgen"
}
