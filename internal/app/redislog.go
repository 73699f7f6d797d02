package app

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisLogger carries go-redis's own log lines (pool dial failures,
// Sentinel and Cluster topology changes) into zap, so they do not appear as
// plain "redis: ..." lines among the JSON logs (#14). It implements
// go-redis's internal Logging interface.
type redisLogger struct {
	log *zap.Logger
}

// Printf logs one go-redis line as a warning: go-redis logs only what went
// wrong or changed.
func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.WarnLevel, "redis client"); ce != nil {
		ce.Write(zap.String("detail", strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")))
	}
}

// redisLoggerOnce guards installRedisLogger; tests reset it.
var redisLoggerOnce sync.Once

// installRedisLogger routes go-redis's log lines to log, named "redis".
// go-redis has one logger per process, so the first node of a process
// installs it and later calls do nothing.
func installRedisLogger(log *zap.Logger) {
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{log: log.Named("redis")}) })
}
