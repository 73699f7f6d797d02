package app

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// NewLogger builds the process logger: JSON for production, console for
// development (--dev). log.time_format picks the timestamp: epoch seconds
// (the JSON default), or RFC 3339 with nanoseconds (the console default is
// ISO 8601).
func NewLogger(c config.Log) (*zap.Logger, error) {
	zc, err := loggerConfig(c)
	if err != nil {
		return nil, err
	}
	return zc.Build()
}

// loggerConfig is NewLogger's configuration, writing to standard error.
func loggerConfig(c config.Log) (zap.Config, error) {
	level := zapcore.InfoLevel
	if c.Level != "" {
		if err := level.UnmarshalText([]byte(c.Level)); err != nil {
			return zap.Config{}, fmt.Errorf("log.level: %q: %w", c.Level, err)
		}
	}
	var zc zap.Config
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
		zc.Sampling = nil
		zc.DisableStacktrace = true
	}
	switch c.TimeFormat {
	case "":
	case config.TimeFormatRFC3339:
		zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	case config.TimeFormatEpoch:
		zc.EncoderConfig.EncodeTime = zapcore.EpochTimeEncoder
	default:
		return zap.Config{}, fmt.Errorf("log.time_format: %q: must be rfc3339 or epoch", c.TimeFormat)
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.OutputPaths = []string{"stderr"}
	return zc, nil
}

// accessLogger returns the logger the proxy writes access lines to, nil
// when log.access is off. In the json format it is log itself, named
// "access"; in the common and combined formats the line is the whole entry,
// so it gets an encoder that writes the message alone, to standard error
// like the other logs (or to w, if not nil).
func accessLogger(c config.Log, log *zap.Logger, w zapcore.WriteSyncer) *zap.Logger {
	if c.Access != nil && !*c.Access {
		return nil
	}
	switch proxy.AccessFormat(c.AccessFormat) {
	case proxy.AccessCommon, proxy.AccessCombined:
	default:
		return log.Named("access")
	}
	if w == nil {
		w = zapcore.Lock(os.Stderr)
	}
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{MessageKey: "msg", LineEnding: zapcore.DefaultLineEnding})
	return zap.New(zapcore.NewCore(enc, w, zapcore.InfoLevel))
}
