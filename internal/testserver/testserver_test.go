package testserver

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func roundTrip(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func TestRedisAnswersAndRestarts(t *testing.T) {
	s := Redis(t)
	if got := roundTrip(t, s.Addr, "PING\r\n"); got != "+PONG" {
		t.Fatalf("PING = %q", got)
	}
	s.Restart()
	if got := roundTrip(t, s.Addr, "PING\r\n"); got != "+PONG" {
		t.Fatalf("PING after restart = %q", got)
	}
}

func TestMemcachedAnswers(t *testing.T) {
	s := Memcached(t)
	if got := roundTrip(t, s.Addr, "version\r\n"); !strings.HasPrefix(got, "VERSION") {
		t.Fatalf("version = %q", got)
	}
}

func TestRedisClusterMigratesSlot(t *testing.T) {
	t.Parallel()
	c := NewRedisCluster(t, 3)
	slot, err := c.KeySlot("k")
	if err != nil {
		t.Fatal(err)
	}
	src, err := c.SlotOwner(slot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Do("set", "k", "v"); err != nil {
		t.Fatal(err)
	}
	dst := c.Nodes[0]
	if dst == src {
		dst = c.Nodes[1]
	}
	moved, err := c.MigrateSlot(slot, dst, 10, nil)
	if err != nil || moved != 1 {
		t.Fatalf("MigrateSlot moved %d keys, %v; want 1", moved, err)
	}
	if owner, err := c.SlotOwner(slot); err != nil || owner != dst {
		t.Fatalf("slot owner after migration: %v %v, want %s", owner, err, dst.Addr)
	}
	if v, err := dst.Do("get", "k"); err != nil || v != "v" {
		t.Fatalf("GET k on the new owner: %v %v", v, err)
	}
}

func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	s := NewRedisSentinel(t)
	if a, err := s.MasterAddr(0); err != nil || a != s.Master.Addr {
		t.Fatalf("master before failover: %q %v, want %s", a, err, s.Master.Addr)
	}
	if _, err := s.Master.Do("set", "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.WaitReplicated()
	s.Failover()
	if v, err := s.Replica.Do("get", "k"); err != nil || v != "v" {
		t.Fatalf("GET k on the promoted replica: %v %v", v, err)
	}
}
