// Package demo runs edgeproxy's whole story on one machine with no external
// service and no file: a small upstream application, several proxy nodes on
// loopback that share resumption, and a short benchmark across them in round
// robin that shows full against resumed handshakes. It backs the
// `edgeproxy demo` command.
package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/app"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// Defaults for Options fields whose zero value means "use the default".
const (
	DefaultNodes         = 3
	DefaultMode          = resumption.ModeTickets
	DefaultBenchDuration = 2 * time.Second
	// MaxNodes bounds Nodes: the demo runs every node in one process.
	MaxNodes = 16
)

// Modes lists the resumption modes the demo runs, as its help says.
var Modes = []string{resumption.ModeTickets, resumption.ModeSticky, resumption.ModeOff, resumption.ModeRedis, resumption.ModeMemcached}

// FleetOptions configures StartFleet.
type FleetOptions struct {
	// Mode is the resumption mode of the nodes: tickets (one generated
	// ticket key ring shared in-process), sticky (node-local sessions, which
	// round robin defeats), off, redis or memcached (a store already running
	// at Redis or Memcached). If empty, DefaultMode.
	Mode string
	// Redis and Memcached are the store addresses for modes redis and
	// memcached.
	Redis, Memcached string
	// Nodes is the number of proxy nodes. If zero, DefaultNodes.
	Nodes int
	// Admin starts each node's admin listener (/metrics) on 127.0.0.1:0.
	Admin bool
	// Logger receives the nodes' logs. If nil, they are discarded.
	Logger *zap.Logger
}

func (o *FleetOptions) mode() string {
	if o.Mode == "" {
		return DefaultMode
	}
	return o.Mode
}

func (o *FleetOptions) nodes() int {
	if o.Nodes == 0 {
		return DefaultNodes
	}
	return o.Nodes
}

// Validate checks the options without I/O.
func (o *FleetOptions) Validate() error {
	var errs []error
	if o.Nodes < 0 || o.Nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("demo: nodes: must be 1 to %d, got %d", MaxNodes, o.Nodes))
	}
	if o.Redis != "" && o.mode() != resumption.ModeRedis {
		errs = append(errs, fmt.Errorf("demo: redis address %q given, but mode is %q: it is used only with mode redis", o.Redis, o.mode()))
	}
	if o.Memcached != "" && o.mode() != resumption.ModeMemcached {
		errs = append(errs, fmt.Errorf("demo: memcached address %q given, but mode is %q: it is used only with mode memcached", o.Memcached, o.mode()))
	}
	if s, err := sharedResumption(o); err != nil {
		errs = append(errs, err)
	} else {
		s.close()
	}
	return errors.Join(errs...)
}

// shared is what the nodes of a fleet share for resumption: the
// configuration every node gets, and what runs beside them.
type shared struct {
	resumption config.Resumption
	// keys is the ticket key ring of mode tickets, nil otherwise.
	keys *ticketkeys.Holder
	// describe says in a few words what is shared.
	describe string
	start    func(context.Context) error
	close    func()
}

// demoStoreTimeout replaces the 25ms default per store call: the demo's
// load generator shares the CPU with the nodes, and on a saturated machine
// scheduling delay alone can exceed 25ms, which would show degraded mode
// instead of what a store shares.
const demoStoreTimeout = 250 * time.Millisecond

// sharedResumption is the one switch that maps a demo mode to what the
// nodes share. It builds without I/O; start begins the background work.
// Adding a mode is adding one case.
func sharedResumption(o *FleetOptions) (*shared, error) {
	nop := func(context.Context) error { return nil }
	switch mode := o.mode(); mode {
	case resumption.ModeTickets:
		holder := ticketkeys.NewHolder(ticketkeys.HolderConfig{})
		src, err := ticketkeys.NewGenerateSource(holder, ticketkeys.GenerateConfig{})
		if err != nil {
			holder.Close()
			return nil, err
		}
		return &shared{
			resumption: config.Resumption{Mode: mode},
			keys:       holder,
			describe:   "stateless tickets under one generated key ring shared by every node",
			start:      src.Start,
			close: func() {
				src.Close()
				holder.Close()
			},
		}, nil
	case resumption.ModeOff:
		return &shared{
			resumption: config.Resumption{Mode: mode},
			describe:   "nothing: resumption is off, every handshake is full",
			start:      nop,
			close:      func() {},
		}, nil
	case resumption.ModeSticky:
		return &shared{
			resumption: config.Resumption{Mode: mode},
			describe:   "nothing: each node keeps its own sessions (round robin defeats it; a sticky balancer would not)",
			start:      nop,
			close:      func() {},
		}, nil
	case resumption.ModeRedis:
		if o.Redis == "" {
			return nil, errors.New("demo: mode redis needs --redis HOST:PORT")
		}
		r := config.Resumption{Mode: mode, Store: config.Store{Timeout: demoStoreTimeout}}
		r.Redis.Addrs = []string{o.Redis}
		return &shared{resumption: r, describe: "server-side sessions in Redis at " + o.Redis, start: nop, close: func() {}}, nil
	case resumption.ModeMemcached:
		if o.Memcached == "" {
			return nil, errors.New("demo: mode memcached needs --memcached HOST:PORT")
		}
		r := config.Resumption{Mode: mode, Store: config.Store{Timeout: demoStoreTimeout}}
		r.Memcached.Servers = []string{o.Memcached}
		return &shared{resumption: r, describe: "server-side sessions in memcached at " + o.Memcached, start: nop, close: func() {}}, nil
	default:
		return nil, fmt.Errorf("demo: mode %q: must be tickets, sticky, off, redis or memcached", mode)
	}
}

// Fleet is a running upstream and its proxy nodes.
type Fleet struct {
	// Mode is the resumption mode; Shared says what the nodes share.
	Mode, Shared string
	// Upstream is the demo application's URL.
	Upstream string
	// Nodes are the running proxy nodes.
	Nodes []*app.App

	upstream *http.Server
	shared   *shared
}

// StartFleet starts the upstream application and the nodes on loopback
// ports. On error everything it started is stopped.
func StartFleet(ctx context.Context, o FleetOptions) (_ *Fleet, err error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	s, err := sharedResumption(&o)
	if err != nil {
		return nil, err
	}
	f := &Fleet{Mode: o.mode(), Shared: s.describe, shared: s}
	defer func() {
		if err != nil {
			f.Close(context.Background())
		}
	}()
	if err := s.start(ctx); err != nil {
		return nil, fmt.Errorf("demo: starting %s: %w", f.Mode, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: starting the upstream: %w", err)
	}
	f.upstream = &http.Server{Handler: demoapp.Handler("demo-upstream"), ReadHeaderTimeout: 10 * time.Second}
	f.Upstream = "http://" + ln.Addr().String()
	go f.upstream.Serve(ln)

	logger := o.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	for i := 0; i < o.nodes(); i++ {
		admin := ""
		if o.Admin {
			admin = "127.0.0.1:0"
		}
		noAccess := false
		cfg := config.Config{
			Listen:     "127.0.0.1:0",
			Admin:      &admin,
			Log:        config.Log{Access: &noAccess},
			Routes:     []proxy.RouteConfig{{Upstreams: []string{f.Upstream}}},
			Resumption: s.resumption,
		}
		a, err := app.New(app.Options{Config: &cfg, SharedKeys: s.keys, Logger: logger.With(zap.Int("node", i+1))})
		if err != nil {
			return nil, fmt.Errorf("demo: node %d: %w", i+1, err)
		}
		if err := a.Start(); err != nil {
			return nil, fmt.Errorf("demo: node %d: %w", i+1, err)
		}
		f.Nodes = append(f.Nodes, a)
	}
	return f, nil
}

// Addrs returns the nodes' TLS addresses.
func (f *Fleet) Addrs() []string {
	out := make([]string, len(f.Nodes))
	for i, n := range f.Nodes {
		out[i] = n.Addr().String()
	}
	return out
}

// Close shuts the nodes down (draining until ctx ends), then the upstream
// and the shared key ring.
func (f *Fleet) Close(ctx context.Context) error {
	var errs []error
	for _, n := range f.Nodes {
		if err := n.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	f.Nodes = nil
	if f.upstream != nil {
		if err := f.upstream.Close(); err != nil {
			errs = append(errs, err)
		}
		f.upstream = nil
	}
	if f.shared != nil {
		f.shared.close()
		f.shared = nil
	}
	return errors.Join(errs...)
}
