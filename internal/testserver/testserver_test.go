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
