package main

import (
	"fmt"
	"log/slog"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"
	"github.com/dockyard/dockyard/webui"
)

// mountWebUI puts the web UI (/, /ui/...) on the registry's address, beside
// /v2/ and /metrics, so the address a user pushes to is also the one they
// open in a browser. fc is the cluster's file system, which the volumes
// pages read; with auth on, those pages check admins against its users.
func mountWebUI(reg *registry.Registry, meta metaserver.API, fc *dfs.Client, auth *registry.AuthConfig, log *slog.Logger) error {
	cfg := webui.Config{Registry: reg.Handler(), Meta: meta, FS: fc, Logger: log}
	if auth != nil {
		cfg.Users = auth.Users
	}
	ui, err := webui.New(cfg)
	if err != nil {
		return fmt.Errorf("web UI: %w", err)
	}
	ui.Register(reg.Echo())
	return nil
}
