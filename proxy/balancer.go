package proxy

import (
	"sync/atomic"
	"time"
)

// balancer chooses an upstream for a request. pick returns an upstream for
// which p.usable(u, now, tried) holds, or nil when there is none.
// Implementations are safe for concurrent use.
type balancer interface {
	pick(p *pool, now time.Time, tried []*upstream) *upstream
}

// newBalancer returns the balancer for a validated RouteConfig.Balance value.
func newBalancer(name string) balancer {
	if name == BalanceLeastConn {
		return &leastConn{}
	}
	return &roundRobin{}
}

// roundRobin hands requests to upstreams in turn, skipping unusable ones.
// A skipped upstream's turn goes to the next usable one.
type roundRobin struct {
	next atomic.Uint64
}

func (b *roundRobin) pick(p *pool, now time.Time, tried []*upstream) *upstream {
	n := uint64(len(p.upstreams))
	start := b.next.Add(1) - 1
	for i := range n {
		u := p.upstreams[(start+i)%n]
		if p.usable(u, now, tried) {
			return u
		}
	}
	return nil
}

// leastConn picks the usable upstream with the fewest requests in flight.
// Ties go round robin, so an idle pool still spreads requests.
type leastConn struct {
	next atomic.Uint64
}

func (b *leastConn) pick(p *pool, now time.Time, tried []*upstream) *upstream {
	n := uint64(len(p.upstreams))
	start := b.next.Add(1) - 1
	var best *upstream
	var bestLoad int64
	for i := range n {
		u := p.upstreams[(start+i)%n]
		if !p.usable(u, now, tried) {
			continue
		}
		if load := u.inflight.Load(); best == nil || load < bestLoad {
			best, bestLoad = u, load
		}
	}
	return best
}
