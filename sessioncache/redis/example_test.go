package redis_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/redis"
)

func ExampleConfig_Validate() {
	cfg := redis.Config{Addrs: []string{"10.0.0.1:6379", "x:y:z"}}
	fmt.Println(cfg.Validate())

	cfg = redis.Config{Addrs: []string{"10.0.0.1:6379"}, Password: "p", PasswordFile: "/run/secrets/redis"}
	fmt.Println(cfg.Validate())
	// Output:
	// redis.addrs[1]: "x:y:z": must be host:port
	// redis.password, redis.password_file: set at most one of them
}

// This example needs a Redis server, so it is compiled but not run.
func Example() {
	cfg := redis.Config{
		Addrs:        []string{"redis.internal:6379"},
		PasswordFile: "/run/secrets/redis-password",
		TLS:          true,
		KeyPrefix:    "fleet-a/",
		Timeout:      50 * time.Millisecond,
	}
	if err := cfg.Validate(); err != nil { // at config load, no I/O
		log.Fatal(err)
	}
	s, err := redis.New(cfg) // reads the password file; does not connect
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil { // the startup step that reaches Redis
		log.Fatal(err)
	}

	key := sessioncache.SessionKey("", []byte{0x9f, 0x86, 0xd0, 0x81})
	if err := s.Put(ctx, key, []byte("sealed state"), time.Hour); err != nil {
		log.Print(err)
	}
}
