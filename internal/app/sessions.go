package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/stateful"
	"github.com/edgeproxy/edgeproxy/sessioncache"
	"github.com/edgeproxy/edgeproxy/sessioncache/lru"
	memcachestore "github.com/edgeproxy/edgeproxy/sessioncache/memcache"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// sessions is the resumption side of a node: the Layer plugged into
// tls.Config and whatever runs behind it (a ticket key source, a store).
type sessions struct {
	mode     string
	layer    *resumption.Layer // nil in mode off
	source   ticketkeys.Source // nil unless this node runs its own key source
	stateful *stateful.Backend // nil unless mode is redis, memcached or sticky
	close    []func() error
}

// reload re-reads reloadable key material (key files on SIGHUP).
func (s *sessions) reload() error {
	if r, ok := s.source.(ticketkeys.Reloader); ok {
		return r.Reload()
	}
	return nil
}

func (s *sessions) Close() error {
	var errs []error
	for i := len(s.close) - 1; i >= 0; i-- {
		errs = append(errs, s.close[i]())
	}
	return errors.Join(errs...)
}

// buildSessions is the one place that knows every resumption backend: it
// maps resumption.mode (and ticket_keys.source) to constructors.
func buildSessions(ctx context.Context, c config.Resumption, opts Options, certs *proxy.Certs, m *resumption.Metrics, sm *stateful.Metrics, reg prometheus.Registerer, log *zap.Logger) (*sessions, error) {
	mode := c.Mode
	if mode == "" {
		mode = config.DefaultMode
	}
	s := &sessions{mode: mode}
	lifetime := resumption.SessionLifetime(c.SessionLifetime)
	if lifetime > resumption.RecommendedMaxLifetime {
		log.Warn("session_lifetime is above the 24h RFC 5246 recommends: a resumed session skips certificate checks",
			zap.Duration("session_lifetime", lifetime))
	}
	var backend resumption.Backend
	switch mode {
	case resumption.ModeOff:
		return s, nil
	case resumption.ModeTickets:
		holder := opts.SharedKeys
		if holder == nil {
			holder = ticketkeys.NewHolder(ticketkeys.HolderConfig{})
			s.close = append(s.close, holder.Close)
			src, err := buildKeySource(c, lifetime, holder, s, reg, log)
			if err != nil {
				s.Close()
				return nil, err
			}
			s.source = src
			s.close = append(s.close, src.Close)
			if err := src.Start(ctx); err != nil {
				s.Close()
				return nil, fmt.Errorf("starting ticket keys: %w", err)
			}
		}
		t, err := resumption.NewTickets(resumption.TicketsConfig{Keys: holder})
		if err != nil {
			s.Close()
			return nil, err
		}
		backend = t
	case resumption.ModeRedis, resumption.ModeMemcached, resumption.ModeSticky:
		st, err := buildStateful(mode, c, lifetime, s, sm, log)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.stateful = st
		backend = st
	default:
		return nil, fmt.Errorf("resumption.mode: %q: not supported by this build", mode)
	}
	layer, err := resumption.New(resumption.Config{
		Mode:     mode,
		Backend:  backend,
		Lifetime: lifetime,
		Scope:    certs.Scope,
		Metrics:  m,
		Logger:   log.Named("resumption"),
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.layer = layer
	return s, nil
}

// buildKeySource builds the ticket key source; closers of what it opens
// (a Redis client) are added to s.
func buildKeySource(c config.Resumption, lifetime time.Duration, h *ticketkeys.Holder, s *sessions, reg prometheus.Registerer, log *zap.Logger) (ticketkeys.Source, error) {
	m, err := ticketkeys.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	log = log.Named("ticketkeys")
	k := c.TicketKeys
	switch k.Source {
	case "", "generate":
		return ticketkeys.NewGenerateSource(h, ticketkeys.GenerateConfig{
			RotateEvery: k.RotateEvery, Lifetime: lifetime, Logger: log, Metrics: m,
		})
	case "file":
		return ticketkeys.NewFileSource(h, ticketkeys.FileConfig{Paths: k.Files, KeySize: k.KeySize, Logger: log, Metrics: m})
	case "redis":
		store, err := redisstore.New(k.Redis.StoreConfig())
		if err != nil {
			return nil, fmt.Errorf("resumption.ticket_keys.%w", err) // redis.<field>: ...
		}
		s.close = append(s.close, store.Close)
		return ticketkeys.NewRedisSource(h, ticketkeys.RedisConfig{
			Client:      store.Client(),
			KEKFile:     k.Redis.KEKFile,
			Prefix:      k.Redis.KeyPrefix,
			RotateEvery: k.RotateEvery,
			Lifetime:    lifetime,
			Logger:      log,
			Metrics:     m,
		})
	}
	return nil, fmt.Errorf("resumption.ticket_keys.source: %q: must be generate, file or redis", k.Source)
}

// closingStore is a shared session store the node closes at shutdown.
type closingStore interface {
	sessioncache.Store
	Close() error
}

// sharedStore builds the shared session store of mode, whose calls timeout
// bounds; nil in mode sticky. Its errors start with the field at fault
// (redis.<field>, memcached.<field>).
func sharedStore(mode string, c config.Resumption, timeout time.Duration) (closingStore, error) {
	switch mode {
	case resumption.ModeRedis:
		rc := c.Redis
		rc.Timeout = timeout
		return built(redisstore.New(rc))
	case resumption.ModeMemcached:
		mc := c.Memcached
		mc.Timeout = timeout
		return built(memcachestore.New(mc))
	}
	return nil, nil
}

// built returns what a store constructor returned, without turning a nil
// *S into a non-nil closingStore.
func built[S closingStore](st S, err error) (closingStore, error) {
	if err != nil {
		return nil, err
	}
	return st, nil
}

// buildStateful builds the backend of the stateful modes over its shared
// store (none in mode sticky); closers are added to s. lifetime is the
// session lifetime in force.
func buildStateful(mode string, c config.Resumption, lifetime time.Duration, s *sessions, sm *stateful.Metrics, log *zap.Logger) (*stateful.Backend, error) {
	sc := stateful.Config{
		Mode:      mode,
		Lifetime:  lifetime,
		Timeout:   c.Store.Timeout,
		SingleUse: c.Store.SingleUse,
		// Read-through (#12): revocation bounded by RevocationPoll.
		ReadThrough:    !c.Store.StrictRevocation,
		RevocationPoll: c.Store.RevocationPoll,
		CommitAsync:    c.Store.CommitAsync,
		CommitQueue:    c.Store.CommitQueue,
		CommitWorkers:  c.Store.CommitWorkers,
		Breaker:        stateful.BreakerConfig{Failures: c.Store.Breaker.Failures, Cooldown: c.Store.Breaker.Cooldown},
		Logger:         log.Named("sessions"),
		Metrics:        sm,
	}
	shared, err := sharedStore(mode, c, sc.StoreCallBound())
	if err != nil {
		return nil, fmt.Errorf("resumption.%w", err) // redis.<field>: or memcached.<field>: ...
	}
	if shared != nil {
		s.close = append(s.close, shared.Close)
		sc.Store = shared
	}
	checkStore(mode, shared, log)
	local, err := lru.New(lru.Config{MaxEntries: c.Store.LocalCache.MaxEntries, MaxBytes: c.Store.LocalCache.MaxBytes})
	if err != nil {
		return nil, fmt.Errorf("resumption.store.local_cache: %w", err)
	}
	sc.Local = local
	st, err := stateful.New(sc)
	if err != nil {
		return nil, err
	}
	s.close = append(s.close, st.Close)
	return st, nil
}
