// Package sessioncache defines the store for server-side TLS session state and
// holds its implementations, one per subpackage: redis, memcache and lru.
//
// Go's crypto/tls server has no TLS 1.2 session-ID cache: it resumes only
// through the ticket extension and TLS 1.3 PSK identities. A "session cache"
// in edgeproxy is server-side state found through an opaque handle that the
// client carries as its ticket (see package resumption).
package sessioncache

import (
	"context"
	"errors"
	"time"
)

// ErrMiss is returned by Store.Get when the key is absent or expired.
var ErrMiss = errors.New("sessioncache: miss")

// Store keeps opaque values under string keys with a time to live, in the
// spirit of autocert.Cache.
//
// Implementations are safe for concurrent use, honour ctx's deadline and
// cancellation, and never panic on any input. Get returns ErrMiss (compared
// with errors.Is) when the key is absent or expired, and any other error for a
// store that could not answer. Put replaces an existing value. Delete of a
// missing key returns nil. Values are returned as stored; the caller must not
// modify a slice it passed to Put, and may keep the slice Get returns.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, val []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}
