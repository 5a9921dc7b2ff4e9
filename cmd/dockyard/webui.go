package main

import (
	"fmt"
	"log/slog"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"
	"github.com/dockyard/dockyard/webui"
)

// mountWebUI puts the web UI (/, /ui/...) on the registry's address, beside
// /v2/ and /metrics, so the address a user pushes to is also the one they
// open in a browser.
func mountWebUI(reg *registry.Registry, meta metaserver.API, log *slog.Logger) error {
	ui, err := webui.New(webui.Config{Registry: reg.Handler(), Meta: meta, Logger: log})
	if err != nil {
		return fmt.Errorf("web UI: %w", err)
	}
	ui.Register(reg.Echo())
	return nil
}
