package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Redis Cluster and Sentinel setups for tests (#12): real redis-server
// processes on free loopback ports, configured the way an operator would,
// with timeouts short enough that a failover completes within seconds.

// Do sends one command to the Redis server (or Sentinel) s and returns its
// RESP2 reply, within 10 seconds. It is for test set-up and inspection.
func (s *Server) Do(args ...any) (any, error) {
	c := goredis.NewClient(&goredis.Options{
		Addr: s.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1,
		DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Result()
}

// poll calls cond until it returns true, failing t with cond's last
// explanation after limit. It polls servers' state, not goroutines.
func poll(t testing.TB, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %s: %s", what, limit, why)
		}
		time.Sleep(50 * time.Millisecond) // polling a server, not synchronising goroutines
	}
}

// redisArgs are the arguments of every redis-server the harness starts: no
// persistence, loopback only, its own directory.
func redisArgs(t testing.TB, port int) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--protected-mode", "no", "--dir", t.TempDir()}
}

// Info returns a field of the Redis server's INFO section, "" if absent.
func (s *Server) Info(section, field string) (string, error) {
	v, err := s.Do("info", section)
	return infoField(v, field), err
}

// infoField returns field's value in the INFO (or CLUSTER INFO) text.
func infoField(info any, field string) string {
	s, _ := info.(string)
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// RedisCluster is a Redis Cluster of masters without replicas, created with
// redis-cli --cluster create. Each master serves a third (for three) of the
// 16384 slots.
type RedisCluster struct {
	Nodes []*Server
	t     testing.TB
}

// NewRedisCluster starts masters cluster-enabled redis-servers and joins
// them into one cluster; it returns once every node sees every slot served.
func NewRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	bin, cli := need(t, "redis-server"), need(t, "redis-cli")
	c := &RedisCluster{t: t}
	for range masters {
		port := FreePort(t)
		args := append(redisArgs(t, port), "--cluster-enabled", "yes",
			"--cluster-port", strconv.Itoa(FreePort(t)),
			"--cluster-config-file", filepath.Join(t.TempDir(), "nodes.conf"),
			"--cluster-node-timeout", "2000")
		c.Nodes = append(c.Nodes, start(t, "redis-server", bin, port, args, "Ready to accept connections"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, c.Addrs()...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	return c
}

// Addrs returns the nodes' addresses, the seeds a client needs.
func (c *RedisCluster) Addrs() []string { return addrs(c.Nodes) }

func addrs(servers []*Server) []string {
	var out []string
	for _, s := range servers {
		out = append(out, s.Addr)
	}
	return out
}

// WaitHealthy waits until every node reports the cluster state ok, with all
// 16384 slots served and every node known.
func (c *RedisCluster) WaitHealthy() {
	c.t.Helper()
	poll(c.t, 30*time.Second, "redis cluster healthy", func() (bool, string) {
		for _, n := range c.Nodes {
			info, err := n.Do("cluster", "info")
			if err != nil {
				return false, err.Error()
			}
			if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" ||
				infoField(info, "cluster_known_nodes") != strconv.Itoa(len(c.Nodes)) {
				return false, fmt.Sprintf("%s: %v", n.Addr, info)
			}
		}
		return true, ""
	})
}

// KeySlot returns the cluster slot of key.
func (c *RedisCluster) KeySlot(key string) (int, error) {
	v, err := c.Nodes[0].Do("cluster", "keyslot", key)
	if err != nil {
		return 0, err
	}
	n, _ := v.(int64)
	return int(n), nil
}

// SlotOwner returns the master that serves slot, as node 0 sees it.
func (c *RedisCluster) SlotOwner(slot int) (*Server, error) {
	v, err := c.Nodes[0].Do("cluster", "slots")
	if err != nil {
		return nil, err
	}
	ranges, _ := v.([]any)
	for _, r := range ranges {
		f, _ := r.([]any)
		if len(f) < 3 {
			continue
		}
		lo, _ := f[0].(int64)
		hi, _ := f[1].(int64)
		master, _ := f[2].([]any)
		if int64(slot) < lo || int64(slot) > hi || len(master) < 2 {
			continue
		}
		port, _ := master[1].(int64)
		for _, n := range c.Nodes {
			if n.Port == int(port) {
				return n, nil
			}
		}
	}
	return nil, fmt.Errorf("slot %d: no owner among %v", slot, c.Addrs())
}

func nodeID(n *Server) (string, error) {
	v, err := n.Do("cluster", "myid")
	id, _ := v.(string)
	return id, err
}

// MigrateSlot moves slot to dst the way redis-cli --cluster reshard does:
// the slot is marked importing on dst and migrating on its owner, its keys
// move with MIGRATE in batches of batch, and then every node is told the
// new owner. During the migration clients get ASK redirections. between,
// if not nil, is called once the slot is marked and after each batch, so a
// test can run traffic against the half-moved slot. It returns the number
// of keys moved.
func (c *RedisCluster) MigrateSlot(slot int, dst *Server, batch int, between func()) (int, error) {
	src, err := c.SlotOwner(slot)
	if err != nil {
		return 0, err
	}
	if src == dst {
		return 0, nil
	}
	srcID, err := nodeID(src)
	if err != nil {
		return 0, err
	}
	dstID, err := nodeID(dst)
	if err != nil {
		return 0, err
	}
	if _, err := dst.Do("cluster", "setslot", slot, "importing", srcID); err != nil {
		return 0, fmt.Errorf("setslot importing: %w", err)
	}
	if _, err := src.Do("cluster", "setslot", slot, "migrating", dstID); err != nil {
		return 0, fmt.Errorf("setslot migrating: %w", err)
	}
	moved := 0
	for {
		if between != nil {
			between()
		}
		v, err := src.Do("cluster", "getkeysinslot", slot, batch)
		if err != nil {
			return moved, fmt.Errorf("getkeysinslot: %w", err)
		}
		keys, _ := v.([]any)
		if len(keys) == 0 {
			break
		}
		args := append([]any{"migrate", "127.0.0.1", dst.Port, "", 0, 5000, "keys"}, keys...)
		if _, err := src.Do(args...); err != nil {
			return moved, fmt.Errorf("migrate: %w", err)
		}
		moved += len(keys)
	}
	// The new owner first, then the old one, then the rest, as
	// redis-cli does: the old owner must not redirect to a node that does
	// not yet know it owns the slot.
	order := []*Server{dst, src}
	for _, n := range c.Nodes {
		if n != src && n != dst {
			order = append(order, n)
		}
	}
	for _, n := range order {
		if _, err := n.Do("cluster", "setslot", slot, "node", dstID); err != nil {
			return moved, fmt.Errorf("setslot node on %s: %w", n.Addr, err)
		}
	}
	return moved, nil
}

// RedisSentinel is one master, one replica and three Sentinels monitoring
// the master as MasterName with a quorum of two. A Sentinel declares the
// master down after one second without an answer.
type RedisSentinel struct {
	MasterName string
	Master     *Server // the master at start; after Failover, the old master (stopped)
	Replica    *Server // the replica at start; after Failover, the master
	Sentinels  []*Server
	t          testing.TB
}

// NewRedisSentinel starts the master, the replica and the Sentinels, and
// returns once the replica is in sync and every Sentinel knows the replica
// and the two other Sentinels, so that a failover can start at once.
func NewRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	bin := need(t, "redis-server")
	s := &RedisSentinel{MasterName: "edgeproxy", t: t}
	mport := FreePort(t)
	s.Master = start(t, "redis-server", bin, mport, redisArgs(t, mport), "Ready to accept connections")
	rport := FreePort(t)
	s.Replica = start(t, "redis-server", bin, rport,
		append(redisArgs(t, rport), "--replicaof", "127.0.0.1", strconv.Itoa(mport)), "Ready to accept connections")
	poll(t, 20*time.Second, "redis replica in sync", func() (bool, string) {
		link, err := s.Replica.Info("replication", "master_link_status")
		return err == nil && link == "up", fmt.Sprintf("master_link_status %q, %v", link, err)
	})
	for range 3 {
		port := FreePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
			"sentinel monitor %[3]s 127.0.0.1 %[4]d 2\n"+
			"sentinel down-after-milliseconds %[3]s 1000\n"+
			"sentinel failover-timeout %[3]s 4000\n", port, dir, s.MasterName, mport)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		s.Sentinels = append(s.Sentinels, start(t, "redis-sentinel", bin, port, []string{conf, "--sentinel"}, "+monitor master"))
	}
	for _, sn := range s.Sentinels {
		poll(t, 30*time.Second, "sentinel "+sn.Addr+" knows the replica and the other sentinels", func() (bool, string) {
			v, err := sn.Do("sentinel", "master", s.MasterName)
			if err != nil {
				return false, err.Error()
			}
			m := pairs(v)
			return m["num-slaves"] == "1" && m["num-other-sentinels"] == "2", fmt.Sprint(m)
		})
	}
	return s
}

// pairs turns a RESP2 [k1 v1 k2 v2 ...] reply into a map.
func pairs(v any) map[string]string {
	a, _ := v.([]any)
	m := make(map[string]string, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		m[fmt.Sprint(a[i])] = fmt.Sprint(a[i+1])
	}
	return m
}

// SentinelAddrs returns the Sentinels' addresses, as a client is given them.
func (s *RedisSentinel) SentinelAddrs() []string { return addrs(s.Sentinels) }

// MasterAddr returns the master's address as Sentinel i reports it.
func (s *RedisSentinel) MasterAddr(i int) (string, error) {
	v, err := s.Sentinels[i].Do("sentinel", "get-master-addr-by-name", s.MasterName)
	if err != nil {
		return "", err
	}
	a, _ := v.([]any)
	if len(a) != 2 {
		return "", errors.New("no master address")
	}
	return fmt.Sprintf("%v:%v", a[0], a[1]), nil
}

// WaitReplicated waits until the replica has acknowledged every write the
// master took so far, so a failover right after loses none of them.
func (s *RedisSentinel) WaitReplicated() {
	s.t.Helper()
	v, err := s.Master.Do("wait", 1, 5000)
	if n, _ := v.(int64); err != nil || n < 1 {
		s.t.Fatalf("WAIT 1 on the master: %v replicas, %v", v, err)
	}
}

// Failover kills the master (SIGKILL, as a crash) and waits until the
// replica is promoted (see WaitPromoted).
func (s *RedisSentinel) Failover() {
	s.t.Helper()
	s.Master.Stop()
	s.WaitPromoted()
}

// WaitPromoted waits, after the master was stopped, until every Sentinel
// names the replica as master and the replica has taken the role.
// Afterwards Replica is the master.
func (s *RedisSentinel) WaitPromoted() {
	s.t.Helper()
	poll(s.t, 30*time.Second, "sentinel failover to the replica", func() (bool, string) {
		for i := range s.Sentinels {
			a, err := s.MasterAddr(i)
			if err != nil || a != s.Replica.Addr {
				return false, fmt.Sprintf("sentinel %d names %q (%v)", i, a, err)
			}
		}
		role, err := s.Replica.Do("role")
		r, _ := role.([]any)
		if err != nil || len(r) == 0 || r[0] != "master" {
			return false, fmt.Sprintf("replica role %v (%v)", role, err)
		}
		return true, ""
	})
}
