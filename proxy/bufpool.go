package proxy

import "sync"

// copyBufferSize is the size of the buffers forward copies bodies
// through: io.Copy's own size, and Caddy's.
const copyBufferSize = 32 << 10

// bufferPool is an httputil.BufferPool, which forward copies responses
// through. Without one ReverseProxy allocates a 32 KiB buffer for every response (80% of a proxied GET's bytes allocated,
// issue #13). Buffers are pooled as array pointers, so Get and Put do not
// allocate.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (p *bufferPool) Get() []byte { return p.pool.Get().(*[copyBufferSize]byte)[:] }

func (p *bufferPool) Put(b []byte) {
	if len(b) == copyBufferSize {
		p.pool.Put((*[copyBufferSize]byte)(b))
	}
}

// copyBuffers is shared by every handler and route of the process.
var copyBuffers = newBufferPool()
