package memcache_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/memcache"
)

func ExampleConfig_Validate() {
	cfg := memcache.Config{Servers: []string{"10.0.0.1:11211", "10.0.0.2"}}
	fmt.Println(cfg.Validate())

	cfg = memcache.Config{Servers: []string{"10.0.0.1:11211"}, Timeout: -time.Second}
	fmt.Println(cfg.Validate())
	// Output:
	// memcached.servers[1]: "10.0.0.2": must be host:port
	// memcached.timeout: must not be negative, got "-1s"
}

// This example needs memcached servers, so it is compiled but not run.
func Example() {
	cfg := memcache.Config{
		Servers:   []string{"cache-1.internal:11211", "cache-2.internal:11211"},
		KeyPrefix: "fleet-a/",
		Timeout:   50 * time.Millisecond,
	}
	if err := cfg.Validate(); err != nil { // at config load, no I/O
		log.Fatal(err)
	}
	s, err := memcache.New(cfg) // resolves the names; does not connect
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil { // the startup step that reaches memcached
		log.Fatal(err)
	}

	key := sessioncache.SessionKey("", []byte{0x9f, 0x86, 0xd0, 0x81})
	if err := s.Put(ctx, key, []byte("sealed state"), time.Hour); err != nil {
		log.Print(err)
	}
}
