package lru_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

func Example() {
	ctx := context.Background()
	clock := storetest.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	s, err := lru.New(lru.Config{MaxEntries: 2, MaxBytes: 1 << 20, Now: clock.Now})
	if err != nil {
		panic(err)
	}
	key := sessioncache.SessionKey("", []byte{0x9f, 0x86, 0xd0, 0x81})
	_ = s.Put(ctx, key, []byte("sealed session state"), time.Hour)

	val, err := s.Get(ctx, key)
	fmt.Printf("%s %q %v\n", key, val, err)

	clock.Advance(time.Hour)
	_, err = s.Get(ctx, key)
	fmt.Println(errors.Is(err, sessioncache.ErrMiss), s.Len())

	err = s.Put(ctx, key, make([]byte, 2<<20), time.Hour)
	fmt.Println(err)
	// Output:
	// edgeproxy/v1/sess/9f86d081 "sealed session state" <nil>
	// true 0
	// sessioncache/lru: value too large: 2097178 bytes, limit 1048576
}
