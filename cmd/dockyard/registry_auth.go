package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"
)

// authFlags are the registry's access-control flags, shared by serve and
// registry. Off by default: a registry on 127.0.0.1 for one person needs
// no accounts (docs/auth.md).
type authFlags struct {
	enabled, anonymousPull bool
	tokenTTL               time.Duration
	realm, service         string
}

func addAuthFlags(f *pflag.FlagSet, a *authFlags) {
	f.BoolVar(&a.enabled, "auth", false, "require registry users (dockyard admin user add) and token authentication; "+
		"without it anyone who reaches the registry may push, pull and delete")
	f.BoolVar(&a.anonymousPull, "auth-anonymous-pull", false, "with --auth, let anyone pull without logging in")
	f.DurationVar(&a.tokenTTL, "auth-token-ttl", 5*time.Minute, "with --auth, how long an issued token is valid")
	f.StringVar(&a.realm, "auth-realm", "", "with --auth, the token endpoint announced to clients "+
		"(default: /token on the address the client used; set it behind a proxy, e.g. https://registry.example.com/token)")
	f.StringVar(&a.service, "auth-service", "dockyard", "with --auth, the service name in tokens; every registry of a "+
		"cluster must use the same one to accept each other's tokens")
}

// check validates the flags, before a command starts anything.
func (a authFlags) check() error {
	if !a.enabled {
		if a.anonymousPull {
			return errors.New("--auth-anonymous-pull needs --auth")
		}
		return nil
	}
	if a.tokenTTL < 10*time.Second || a.tokenTTL > 24*time.Hour {
		return fmt.Errorf("--auth-token-ttl %s: give between 10s and 24h", a.tokenTTL)
	}
	return nil
}

// config returns the registry's auth config over kv (nil when --auth is
// off) and warns when nobody could log in yet.
func (a authFlags) config(ctx context.Context, kv metaserver.KV, log *slog.Logger) (*registry.AuthConfig, error) {
	if err := a.check(); err != nil || !a.enabled {
		return nil, err
	}
	users := registry.NewUserStore(kv)
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if list, err := users.List(lctx); err != nil {
		log.Warn("could not list registry users", "err", err)
	} else if len(list) == 0 {
		log.Warn("registry auth is on but there are no users yet; add one with: dockyard admin user add NAME --admin")
	}
	return &registry.AuthConfig{
		Users:         users,
		AnonymousPull: a.anonymousPull,
		TokenTTL:      a.tokenTTL,
		Realm:         a.realm,
		Service:       a.service,
	}, nil
}
