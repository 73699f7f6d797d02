package configs

import (
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of the Compose specification the test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image      string   `yaml:"image"`
	Command    []string `yaml:"command"`
	Ports      []string `yaml:"ports"`
	Volumes    []string `yaml:"volumes"`
	ReadOnly   bool     `yaml:"read_only"`
	CapDrop    []string `yaml:"cap_drop"`
	StopGrace  string   `yaml:"stop_grace_period"`
	DependsOn  any      `yaml:"depends_on"`
	User       string   `yaml:"user"`
	Entrypoint []string `yaml:"entrypoint"`
}

var composeVar = regexp.MustCompile(`\$\{(\w+)(?::-([^}]*))?\}`)

// expand resolves ${VAR:-default} as Compose does, from env.
func expand(s string, env map[string]string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := composeVar.FindStringSubmatch(m)
		if v, ok := env[sub[1]]; ok && v != "" {
			return v
		}
		return sub[2]
	})
}

// flagValue returns the value after --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return port
}

func TestComposeFleet(t *testing.T) {
	t.Parallel()
	dir := "compose"
	data, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"haproxy", "edge1", "edge2", "edge3", "redis", "memcached", "upstream"} {
		if _, ok := cf.Services[name]; !ok {
			t.Fatalf("service %s missing; have %v", name, slices.Sorted(maps.Keys(cf.Services)))
		}
	}

	// Redis is a bounded cache that evicts by TTL or LRU.
	redis := strings.Join(cf.Services["redis"].Command, " ")
	if !strings.Contains(redis, "--maxmemory ") || !regexp.MustCompile(`--maxmemory-policy (volatile-ttl|allkeys-lru|volatile-lru)`).MatchString(redis) {
		t.Errorf("redis command %q: want --maxmemory and a TTL or LRU eviction policy", redis)
	}

	// HAProxy: round robin over the three nodes' TLS ports, checked on
	// /readyz at their admin ports.
	hcfg, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	hap := string(hcfg)
	if !slices.ContainsFunc(cf.Services["haproxy"].Volumes, func(v string) bool { return strings.HasPrefix(v, "./haproxy.cfg:") }) {
		t.Error("haproxy does not mount ./haproxy.cfg")
	}
	for _, want := range []string{"balance roundrobin", "uri /readyz", "expect status 200"} {
		if !strings.Contains(hap, want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	frontPort := regexp.MustCompile(`(?m)^frontend tls\s*\n\s*bind :(\d+)`).FindStringSubmatch(hap)
	if frontPort == nil || !slices.Contains(cf.Services["haproxy"].Ports, "127.0.0.1:"+frontPort[1]+":"+frontPort[1]) {
		t.Errorf("haproxy publishes %q, want its frontend port %v", cf.Services["haproxy"].Ports, frontPort)
	}
	checkPort := regexp.MustCompile(`check port (\d+)`).FindStringSubmatch(hap)
	if checkPort == nil {
		t.Fatal("haproxy.cfg: no 'check port' for the admin listener")
	}

	// Every mode the variable can select must pass config check.
	for _, mode := range []string{"", "tickets", "redis", "memcached", "sticky", "off"} {
		env := map[string]string{"EDGEPROXY_RESUMPTION": mode}
		for _, name := range []string{"edge1", "edge2", "edge3"} {
			s := cf.Services[name]
			args := make([]string, len(s.Command))
			for i, a := range s.Command {
				args[i] = expand(a, env)
			}
			if args[0] != "serve" {
				t.Fatalf("%s runs %q, want serve", name, args)
			}
			if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || s.StopGrace == "" {
				t.Errorf("%s: read_only %v, cap_drop %v, stop_grace_period %q: want a read-only root, no capabilities and a grace period", name, s.ReadOnly, s.CapDrop, s.StopGrace)
			}
			mounts := map[string]string{} // container path -> host path or volume
			var targets []string
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				mounts[parts[1]] = parts[0]
				targets = append(targets, parts[1])
			}
			cfgPath := flagValue(args, "config")
			host, ok := mounts[cfgPath]
			if !ok || !strings.HasPrefix(host, "./") {
				t.Fatalf("%s: --config %q is not a mounted file (mounts %v)", name, cfgPath, mounts)
			}
			raw, err := os.ReadFile(filepath.Join(dir, host))
			if err != nil {
				t.Fatal(err)
			}
			c := loadConfig(t, raw)
			if m := flagValue(args, "resumption"); m != "" {
				c.Resumption.Mode = m
			}
			for _, p := range checkWithStandIns(t, c) {
				if !underAny(p, targets) {
					t.Errorf("%s: the config names %q, which no volume mounts (%v)", name, p, targets)
				}
			}
			if p := portOf(t, c.Listen); !strings.Contains(hap, name+":"+p) {
				t.Errorf("haproxy.cfg does not send to %s:%s, the node's listen port", name, p)
			}
			if c.Admin == nil {
				t.Errorf("%s: no admin listener for haproxy's checks", name)
			} else if portOf(t, *c.Admin) != checkPort[1] {
				t.Errorf("%s: admin %q, but haproxy checks port %s", name, *c.Admin, checkPort[1])
			}
			// The stores and the upstream are services of this file.
			addrs := append(append([]string{}, c.Resumption.Redis.Addrs...), c.Resumption.Memcached.Servers...)
			for _, r := range c.Routes {
				for _, u := range r.Upstreams {
					addrs = append(addrs, strings.TrimPrefix(u, "http://"))
				}
			}
			for _, a := range addrs {
				h, _, _ := net.SplitHostPort(a)
				if _, ok := cf.Services[h]; !ok {
					t.Errorf("%s: the config reaches %q, which is no service", name, a)
				}
			}
			up := cf.Services["upstream"]
			if l := flagValue(up.Command, "listen"); !slices.Contains(addrs, "upstream:"+portOf(t, l)) {
				t.Errorf("upstream listens on %q, the route goes elsewhere: %v", l, addrs)
			}
		}
	}
	if cf.Services["edge1"].Command[len(cf.Services["edge1"].Command)-1] != "${EDGEPROXY_RESUMPTION:-tickets}" {
		t.Error("EDGEPROXY_RESUMPTION does not select the mode")
	}
}
