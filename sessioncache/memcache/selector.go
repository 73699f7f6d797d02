package memcache

import (
	"net"
	"strconv"

	gomemcache "github.com/bradfitz/gomemcache/memcache"
)

// rendezvous is a gomemcache.ServerSelector by rendezvous (highest random
// weight) hashing: a key goes to the server whose hash of (server, key)
// scores highest. Removing one of N servers therefore moves only the keys
// that server held, about 1/N of them, and adding a server moves only the
// keys it now wins, about 1/(N+1); gomemcache's default selector,
// CRC32(key) mod N, moves about (N-1)/N of all keys on either change (#12).
//
// A server scores by its name as configured, not by its resolved address or
// its position, so nodes that list the same servers in any order agree, and
// a name that resolves differently on two nodes still maps keys alike. The
// k-th listing of a name (k > 1) is scored as "name#k", so a server listed
// twice gets twice the share of keys.
//
// PickServer costs one pass over the key and one multiply-xorshift mix per
// server: O(N), which is cheaper than a ketama ring lookup for the handful
// of servers a memcached pool has. rendezvous is immutable once built and
// safe for concurrent use.
type rendezvous struct {
	addrs []net.Addr // as gomemcache.ServerList resolved them, in config order
	seeds []uint64   // hash of each listing's name
}

// newRendezvous resolves servers as gomemcache.ServerList does (a name
// containing "/" is a Unix socket) and returns their selector.
func newRendezvous(servers ...string) (*rendezvous, error) {
	var list gomemcache.ServerList
	if err := list.SetServers(servers...); err != nil {
		return nil, err
	}
	r := &rendezvous{}
	_ = list.Each(func(a net.Addr) error {
		r.addrs = append(r.addrs, a)
		return nil
	})
	seen := make(map[string]int, len(servers))
	for _, s := range servers {
		seen[s]++
		name := s
		if k := seen[s]; k > 1 {
			name += "#" + strconv.Itoa(k)
		}
		r.seeds = append(r.seeds, fnv1a(name))
	}
	return r, nil
}

// PickServer returns the server that key maps to.
func (r *rendezvous) PickServer(key string) (net.Addr, error) {
	if len(r.addrs) == 0 {
		return nil, gomemcache.ErrNoServers
	}
	h := fnv1a(key)
	best, bestScore, bestSeed := 0, uint64(0), uint64(0)
	for i, seed := range r.seeds {
		// Ties (2^-64 per pair) break by seed, not by list position, so
		// the order of the list never matters.
		if s := mix(h ^ seed); i == 0 || s > bestScore || (s == bestScore && seed > bestSeed) {
			best, bestScore, bestSeed = i, s, seed
		}
	}
	return r.addrs[best], nil
}

// Each calls f for each listed server, in config order, until f fails.
func (r *rendezvous) Each(f func(net.Addr) error) error {
	for _, a := range r.addrs {
		if err := f(a); err != nil {
			return err
		}
	}
	return nil
}

// fnv1a is 64-bit FNV-1a, without hash.Hash's allocation.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is SplitMix64's finalizer: a bijection in which every input bit
// affects every output bit, so the scores of one key on two servers are
// independent even though their inputs differ only in the seed.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

var _ gomemcache.ServerSelector = (*rendezvous)(nil)
