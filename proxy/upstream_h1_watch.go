package proxy

import (
	"context"
	"time"
)

// unwatchedWait is how long an exchange waits for its response header
// before it watches its request's context (roundTrip), and so how late,
// at most, it notices a cancellation in that time.
const unwatchedWait = 20 * time.Millisecond

// noWatch is the stop of a context that is never canceled.
func noWatch() bool { return true }

// watch makes ctx's cancellation close c until unwatch, unless it
// already does.
func (c *h1Conn) watch(ctx context.Context) {
	if c.stop != nil {
		return
	}
	if ctx.Done() == nil {
		c.stop = noWatch
		return
	}
	c.stop = context.AfterFunc(ctx, c.cancel)
	if c.pool.cfg.watching != nil {
		c.pool.cfg.watching()
	}
}

// watchLate is readResponse's watch of an exchange roundTrip left
// unwatched: it returns ctx's error if it is done, and puts the response
// header deadline back.
func (c *h1Conn) watchLate(ctx context.Context) error {
	if c.stop != nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.watch(ctx)
	if !c.polledTo.IsZero() {
		c.nc.SetReadDeadline(c.polledTo)
		c.polledTo = time.Time{}
	}
	return nil
}

// unwatch ends watch. It reports false if the context fired: c is being
// closed.
func (c *h1Conn) unwatch() bool {
	if c.stop == nil {
		return true
	}
	ok := c.stop()
	c.stop = nil
	return ok
}
