package config

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/resumption"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// Check loads the file at path as serve would, without listening or
// reaching any server: it decodes and validates the file, and reads every
// file the configuration names (CheckFiles). It returns every problem
// found, each naming its field; nil means serve would start with this file
// (given its servers answer).
func Check(path string) (*Config, error) {
	c, err := LoadUnvalidated(path)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(c.Validate(), c.CheckFiles()); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// CheckFiles reads the files a configuration names with the loaders
// serve uses: certificate/key pairs (and that each key matches its
// certificate), client-certificate CA files, ticket key files (size, permissions, duplicate names), the
// key-encryption key file, and Redis password and CA files. It reaches no
// server. It returns every problem found, each naming its field.
func (c *Config) CheckFiles() error {
	var errs []error
	for i, cc := range c.TLS.Certificates {
		errs = append(errs, checkCertPair(fmt.Sprintf("tls.certificates[%d]", i), cc))
	}
	if c.TLS.ClientAuthOn() && len(c.TLS.validateClientAuth()) == 0 {
		// The CA files, read as serve reads them; errors name the field.
		if _, err := proxy.LoadClientAuth(c.TLS.ClientAuth.Policy(), c.TLS.Certificates); err != nil {
			errs = append(errs, err)
		}
	}
	r := c.Resumption
	switch cmp.Or(r.Mode, DefaultMode) {
	case resumption.ModeTickets:
		errs = append(errs, r.TicketKeys.checkFiles(cmp.Or(r.SessionLifetime, resumption.DefaultSessionLifetime))...)
	case resumption.ModeRedis:
		if r.Redis.PasswordFile != "" || r.Redis.TLSCAFile != "" {
			errs = append(errs, checkRedisFiles("resumption", r.Redis))
		}
	}
	return errors.Join(errs...)
}

// checkCertPair loads one certificate/key pair as proxy.LoadCerts does.
func checkCertPair(field string, cc proxy.CertConfig) error {
	var errs []error
	for _, f := range []struct{ name, path string }{{"cert", cc.Cert}, {"key", cc.Key}} {
		if f.path == "" {
			continue // Validate reports it
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", field, f.name, pathError(err)))
		}
	}
	if len(errs) > 0 || cc.Cert == "" || cc.Key == "" {
		return errors.Join(errs...)
	}
	if _, err := tls.LoadX509KeyPair(cc.Cert, cc.Key); err != nil {
		return fmt.Errorf("%s: cert %q, key %q: %w", field, cc.Cert, cc.Key, err)
	}
	return nil
}

// pathError says `"/etc/x.pem": no such file or directory` rather than
// `stat /etc/x.pem: no such file or directory`.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%q: %w", pe.Path, pe.Err)
	}
	return err
}

// checkFiles builds the ticket key source as serve would and reads its
// files, without starting it or reaching Redis.
func (k TicketKeys) checkFiles(lifetime time.Duration) []error {
	var errs []error
	holder := ticketkeys.NewHolder(ticketkeys.HolderConfig{})
	defer holder.Close()
	switch k.Source {
	case "", "generate":
		if _, err := ticketkeys.NewGenerateSource(holder, ticketkeys.GenerateConfig{RotateEvery: k.RotateEvery, Lifetime: lifetime}); err != nil {
			errs = append(errs, fmt.Errorf("resumption.ticket_keys: %w", err))
		}
	case "file":
		ok := true
		for i, f := range k.Files {
			if _, err := ticketkeys.InspectFile(f); err != nil {
				errs = append(errs, fmt.Errorf("resumption.ticket_keys.files[%d]: %w", i, err))
				ok = false
			}
		}
		// Names repeated across files, too many keys in all.
		if ok && len(k.Files) > 1 {
			if _, err := ticketkeys.InspectFiles(ticketkeys.FileConfig{Paths: k.Files}); err != nil {
				errs = append(errs, fmt.Errorf("resumption.ticket_keys.files: %w", err))
			}
		}
	case "redis":
		if k.Redis.PasswordFile != "" {
			errs = append(errs, checkRedisFiles("resumption.ticket_keys", redisstore.Config{
				Addrs: k.Redis.Addrs, MasterName: k.Redis.MasterName, PasswordFile: k.Redis.PasswordFile,
			}))
		}
		if k.Redis.KEKFile != "" {
			errs = append(errs, checkKEK(holder, k, lifetime))
		}
	}
	return errs
}

// checkRedisFiles builds the Redis client as serve does, which reads the
// password and CA files; go-redis dials only on first use, and the client
// is closed unused.
func checkRedisFiles(field string, rc redisstore.Config) error {
	st, err := redisstore.New(rc)
	if err != nil {
		return fmt.Errorf("%s.%w", field, err) // redis.<field>: ...
	}
	return st.Close()
}

// checkKEK starts a redis ticket key source whose store is never reached:
// RedisSource.Start fails only if the key-encryption key file is bad, and
// otherwise starts degraded on a local key, which Close discards.
func checkKEK(holder *ticketkeys.Holder, k TicketKeys, lifetime time.Duration) error {
	src, err := ticketkeys.NewRedisSource(holder, ticketkeys.RedisConfig{
		Client: unreachable{}, KEKFile: k.Redis.KEKFile, Prefix: k.Redis.KeyPrefix,
		RotateEvery: k.RotateEvery, Lifetime: lifetime,
	})
	if err != nil {
		return fmt.Errorf("resumption.ticket_keys.redis: %w", err)
	}
	defer src.Close()
	if err := src.Start(context.Background()); err != nil && !errors.Is(err, ticketkeys.ErrUnavailable) {
		return fmt.Errorf("resumption.ticket_keys.redis.kek_file: %w", err)
	}
	return nil
}

// unreachable is a key store that is never reached.
type unreachable struct{}

var errNotReached = errors.New("config check reaches no server")

func (unreachable) Pipelined(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return nil, errNotReached
}
