package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
)

// healthChecker runs a route's active health checks. round is safe for
// concurrent use; the loop that calls it is owned by Handler (Start/Stop).
type healthChecker struct {
	pool   *pool
	cfg    HealthCheckConfig
	urls   []string // check URL per pool.upstreams entry
	client *http.Client
	log    *zap.Logger
	// firstAfter delays the first round, a random part of the interval so
	// that routes and proxy nodes do not check in step. Tests set it to 0.
	firstAfter time.Duration
}

func newHealthChecker(p *pool, hc HealthCheckConfig, rt http.RoundTripper, log *zap.Logger) *healthChecker {
	c := &healthChecker{
		pool: p,
		cfg:  hc,
		client: &http.Client{
			Transport: rt,
			// A redirect is an answer, not something to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		log:        log,
		firstAfter: rand.N(hc.interval()),
	}
	ref, err := url.Parse(hc.Path)
	if err != nil { // ValidateRoutes rejects this; keep the path literal
		ref = &url.URL{Path: hc.Path}
	}
	for _, u := range p.upstreams {
		c.urls = append(c.urls, u.url.ResolveReference(ref).String())
	}
	return c
}

// run checks every interval until ctx is done, starting after firstAfter.
// A panicking check is logged and the loop carries on at the next interval.
func (c *healthChecker) run(ctx context.Context) {
	interval := c.cfg.interval()
	t := time.NewTimer(c.firstAfter)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.round(ctx)
		// ±10% so checks of many routes spread out over time.
		t.Reset(interval - interval/10 + rand.N(interval/5+1))
	}
}

// round checks every upstream once, concurrently, and waits for the results.
func (c *healthChecker) round(ctx context.Context) {
	var wg sync.WaitGroup
	for i, u := range c.pool.upstreams {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					c.log.Error("health check panic", zap.String("upstream", u.name),
						zap.Any("panic", r), zap.Stack("stack"))
				}
			}()
			ok := c.check(ctx, u, c.urls[i])
			if ctx.Err() != nil {
				return // stopping: a canceled check says nothing about u
			}
			c.pool.checked(u, ok, &c.cfg)
		})
	}
	wg.Wait()
}

// check reports whether u answered target with the expected status in time.
func (c *healthChecker) check(ctx context.Context, u *upstream, target string) bool {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		c.log.Error("health check request", zap.String("upstream", u.name), zap.Error(err))
		return false
	}
	req.Header.Set("User-Agent", "edgeproxy-health-check")
	resp, err := c.client.Do(req)
	if err != nil {
		c.log.Debug("health check failed", zap.String("upstream", u.name), zap.Error(err))
		return false
	}
	// Drain a little so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != c.cfg.expectStatus() {
		c.log.Debug("health check failed", zap.String("upstream", u.name), zap.Int("status", resp.StatusCode))
		return false
	}
	return true
}
