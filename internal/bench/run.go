package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runner is one Run in progress.
type runner struct {
	cfg     Config
	abort   context.Context // connections in progress stop when it ends
	cancel  context.CancelCauseFunc
	targets []string
	dialer  net.Dialer

	// refusedRun counts dials refused since the last accepted one; at
	// maxRefused the run stops with a *RefusedError.
	refusedRun atomic.Int64
	maxRefused int64

	// Shared counters, for the bound and for progress only.
	issued  atomic.Int64 // measured connections started (mode Conns)
	done    atomic.Int64
	resumed atomic.Int64
	errs    atomic.Int64

	// proceed is set before start is closed (which publishes it): false
	// tells the workers to end without measuring.
	proceed bool
}

func newRunner(ctx context.Context, cfg Config) *runner {
	abort, cancel := context.WithCancelCause(ctx)
	return &runner{
		cfg:        cfg,
		abort:      abort,
		cancel:     cancel,
		targets:    cfg.Targets,
		dialer:     net.Dialer{Timeout: orDefault(cfg.Timeout, DefaultTimeout)},
		maxRefused: int64(orDefault(cfg.MaxRefused, DefaultMaxRefused+orDefault(cfg.Concurrency, DefaultConcurrency))),
	}
}

// dialed records the outcome of a dial to target and stops the run once
// maxRefused dials in a row were refused.
func (r *runner) dialed(target int, err error) {
	switch {
	case err == nil:
		r.refusedRun.Store(0)
	case errors.Is(err, syscall.ECONNREFUSED):
		if n := r.refusedRun.Add(1); n >= r.maxRefused {
			r.cancel(&RefusedError{Dials: n, Target: r.targets[target], Err: err})
		}
	}
}

// err is why the run was aborted: the caller's context, or a
// *RefusedError; nil if it was not.
func (r *runner) err() error {
	if r.abort.Err() == nil {
		return nil
	}
	return context.Cause(r.abort)
}

// tlsConfigs returns one client configuration per target, all sharing cache.
func (r *runner) tlsConfigs(cache tls.ClientSessionCache) []*tls.Config {
	v := r.cfg.version()
	out := make([]*tls.Config, len(r.targets))
	for i, t := range r.targets {
		name := r.cfg.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(t)
			name = strings.Trim(name, "[]")
		}
		c := &tls.Config{
			ServerName:         name,
			InsecureSkipVerify: r.cfg.Insecure,
			RootCAs:            r.cfg.RootCAs,
			MinVersion:         v,
			MaxVersion:         v,
			ClientSessionCache: cache,
		}
		if r.cfg.HTTP {
			c.NextProtos = []string{"http/1.1"}
		}
		out[i] = c
	}
	return out
}

func (r *runner) run() (*Result, error) {
	n := orDefault(r.cfg.Concurrency, DefaultConcurrency)
	resume := r.cfg.mode() == ModeResume
	workers := make([]*worker, n)
	for i := range workers {
		workers[i] = newWorker(r, i)
	}

	// Warm-up (mode resume): every worker gets a session, then all start
	// together. The barrier is a WaitGroup and a channel, not a sleep.
	var ready, finished sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	finished.Add(n)
	for _, w := range workers {
		go func() {
			defer finished.Done()
			if resume {
				w.warmup()
			}
			ready.Done()
			select {
			case <-start:
			case <-r.abort.Done():
				return
			}
			if r.proceed {
				w.loop()
			}
		}()
	}
	ready.Wait()

	res := &Result{
		Mode: r.cfg.mode(), TLSVersion: r.cfg.version(), Targets: append([]string(nil), r.targets...),
		Concurrency: n, HTTP: r.cfg.HTTP, CPUs: runtime.GOMAXPROCS(0),
	}
	for _, w := range workers {
		res.Warmup += w.warmups
		res.WarmupErrors += w.warmupErrs
	}
	if err := r.err(); err != nil || (resume && res.WarmupErrors == res.Warmup) {
		close(start) // r.proceed is false: the workers end at once
		finished.Wait()
		if err != nil {
			r.collect(res, workers)
			return res, err
		}
		return nil, fmt.Errorf("bench: every warm-up connection failed (%s): check the targets", workers[0].firstErr)
	}

	duration := orDefault(r.cfg.Duration, DefaultDuration)
	stop := r.abort
	var cancel context.CancelFunc = func() {}
	if r.cfg.Conns <= 0 {
		stop, cancel = context.WithTimeout(r.abort, duration)
	}
	defer cancel()
	for _, w := range workers {
		w.stop = stop
	}

	cpu0 := cpuTime()
	t0 := time.Now()
	r.proceed = true
	close(start)

	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if r.cfg.Progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			every := orDefault(r.cfg.ProgressEvery, DefaultProgressEvery)
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					r.cfg.Progress(r.progress(t0, duration, false))
				case <-progressDone:
					return
				}
			}
		}()
	}
	finished.Wait()
	res.Elapsed = time.Since(t0)
	res.ClientCPU = cpuTime() - cpu0
	close(progressDone)
	progressWG.Wait()
	if r.cfg.Progress != nil {
		p := r.progress(t0, duration, true)
		p.Elapsed = res.Elapsed
		r.cfg.Progress(p)
	}

	r.collect(res, workers)
	return res, r.err()
}

func (r *runner) progress(t0 time.Time, duration time.Duration, final bool) Progress {
	p := Progress{
		Elapsed: time.Since(t0),
		Done:    r.done.Load(), Resumed: r.resumed.Load(), Errors: r.errs.Load(),
		Final: final,
	}
	if r.cfg.Conns > 0 {
		p.Conns = int64(r.cfg.Conns)
	} else {
		p.Duration = duration
	}
	return p
}

// collect merges the workers' private tallies into res.
func (r *runner) collect(res *Result, workers []*worker) {
	var all, full, resumed histogram
	res.ErrorsByKind = map[string]int64{}
	res.ErrorExamples = map[string]string{}
	var fullSent, fullRecv, resSent, resRecv int64
	for _, w := range workers {
		res.Full += w.full
		res.Resumed += w.resumed
		res.CrossNode += w.crossNode
		res.DrainTimeouts += w.drainTimeouts
		for k, v := range w.errs {
			res.Errors += v
			res.ErrorsByKind[k] += v
			if _, ok := res.ErrorExamples[k]; !ok {
				res.ErrorExamples[k] = w.errExample[k]
			}
		}
		full.Merge(&w.fullHist)
		resumed.Merge(&w.resumedHist)
		fullSent += w.fullSent
		fullRecv += w.fullRecv
		resSent += w.resSent
		resRecv += w.resRecv
	}
	res.Connections = res.Full + res.Resumed + res.Errors
	all.Merge(&full)
	all.Merge(&resumed)
	res.Latency = latencyOf(&all)
	res.FullStats = classOf(&full, res.Full, fullSent, fullRecv)
	res.ResumedStats = classOf(&resumed, res.Resumed, resSent, resRecv)
	if all.Count() > 0 {
		for _, p := range curvePercentiles {
			res.Curve = append(res.Curve, CurvePoint{Percentile: p, Latency: all.Quantile(p / 100)})
		}
	}
}

func latencyOf(h *histogram) Latency {
	return Latency{P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99), Max: h.Max(), Mean: h.Mean()}
}

func classOf(h *histogram, n, sent, recv int64) Class {
	c := Class{Handshakes: n, Latency: latencyOf(h)}
	if n > 0 {
		c.BytesSent = float64(sent) / float64(n)
		c.BytesReceived = float64(recv) / float64(n)
	}
	return c
}
