package redis_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

func TestPutBatch(t *testing.T) {
	// Not parallel: it stops its server, whose port a parallel test's new
	// server could then take.
	srv := testserver.Redis(t)
	s := newStore(t, redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "b/"})
	ctx := context.Background()
	entries := []sessioncache.Entry{{Key: "k1", Val: []byte("one")}, {Key: "k2", Val: nil}, {Key: "k3", Val: []byte("three")}}
	if err := s.PutBatch(ctx, entries, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got, err := s.Get(ctx, e.Key)
		if err != nil || !bytes.Equal(got, e.Val) {
			t.Fatalf("Get(%s) = %q, %v; want %q", e.Key, got, err, e.Val)
		}
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ttl, err := rdb.PTTL(ctx, "b/k1").Result()
	if err != nil || ttl <= time.Hour-time.Minute || ttl > time.Hour {
		t.Fatalf("PTTL = %v, %v; want about the hour given", ttl, err)
	}

	// Refused before anything is sent.
	if err := s.PutBatch(ctx, []sessioncache.Entry{{Key: "ok", Val: []byte("x")}, {Key: "bad key"}}, time.Hour); err == nil || !strings.Contains(err.Error(), "put") {
		t.Fatalf("PutBatch with an illegal key = %v; want an error", err)
	}
	if _, err := s.Get(ctx, "ok"); !errors.Is(err, sessioncache.ErrMiss) {
		t.Fatalf("a batch with an illegal key stored its legal one: %v", err)
	}
	if err := s.PutBatch(ctx, entries, 0); err == nil {
		t.Fatal("PutBatch with a zero ttl succeeded")
	}
	// A stopped server: an *Error naming the operation.
	srv.Stop()
	var re *redis.Error
	if err := s.PutBatch(ctx, entries, time.Hour); !errors.As(err, &re) || re.Op != "put" {
		t.Fatalf("PutBatch to a stopped server = %v; want a *redis.Error for put", err)
	}
}
