package app

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// storeCheckTimeout bounds the start-up reachability check of a shared
// session store.
const storeCheckTimeout = time.Second

// pinger is a store that can tell whether its servers answer: the Redis and
// memcached session stores.
type pinger interface {
	Ping(ctx context.Context) error
}

// checkStore pings a shared session store once at start and logs whether it
// answered. It never fails the start: while the store is down, returning
// clients get full handshakes (or resume from the node-local cache), and
// the store is used as soon as it answers. store may be nil (sticky mode)
// or not a pinger; then nothing is checked.
func checkStore(mode string, store any, log *zap.Logger) {
	p, ok := store.(pinger)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeCheckTimeout)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		log.Warn("session store unreachable at start: full handshakes until it answers",
			zap.String("store", mode), zap.Error(err))
		return
	}
	log.Info("session store reachable", zap.String("store", mode))
}
