package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// PutBatch stores every entry for ttl (rounded up to a whole millisecond)
// in one pipelined round trip per server (a Cluster splits the pipeline by
// slot), replacing earlier values. It returns nil if every value was
// stored, else an error: an illegal key or ttl before anything is sent, or
// an *Error joining the failed commands' errors, in which case some entries
// may have been stored. ctx and Config.Timeout bound the whole batch.
func (s *Store) PutBatch(ctx context.Context, entries []sessioncache.Entry, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("sessioncache/redis: put: ttl must be positive, got %q", ttl)
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		k, err := s.key("put", e.Key)
		if err != nil {
			return err
		}
		keys[i] = k
	}
	if err := ctx.Err(); err != nil {
		return s.fail("put", err)
	}
	ms := int64(ttl / time.Millisecond)
	if ttl%time.Millisecond != 0 {
		ms++
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	cmds, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, e := range entries {
			val := e.Val
			if val == nil {
				val = []byte{}
			}
			p.Process(ctx, goredis.NewStatusCmd(ctx, "set", keys[i], val, "px", ms))
		}
		return nil
	})
	if err == nil {
		return nil
	}
	var errs []error
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil {
			errs = append(errs, cerr)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, err)
	}
	return s.failCtx(ctx, "put", errors.Join(errs...))
}
