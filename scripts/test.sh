#!/usr/bin/env bash
# `make test`: set up (packages, Go tools, dockerd), lint, then every test,
# unit and end to end, against the freshly built bin/dockyard.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(./scripts/test-setup.sh)"
cleanup() {
	if [ -n "${DOCKYARD_DOCKERD_PID:-}" ]; then
		kill "$DOCKYARD_DOCKERD_PID" 2>/dev/null || true
		wait "$DOCKYARD_DOCKERD_PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT

export DOCKYARD_BIN="$PWD/bin/dockyard"
make lint
# -p 2: the machine has two cores; the e2e package starts whole clusters.
go test -count=1 -p 2 -timeout 18m ./... 2>&1 | tee test-output.log
