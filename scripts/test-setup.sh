#!/usr/bin/env bash
# Installs what Dockyard's tests need on a fresh Debian machine and starts a
# dockerd if none answers. Idempotent: a second run installs nothing. Prints
# `export NAME=VALUE` lines on stdout for the caller to eval; progress goes to
# stderr.
set -euo pipefail

log() { echo "test-setup: $*" >&2; }

cache=${DOCKYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dockyard}
mkdir -p "$cache"
gobin=$(go env GOPATH)/bin
export PATH="$gobin:$PATH"

# Debian packages: the FUSE user tools, the container clients the e2e tests
# drive, and the runtime `dockyard run` starts containers with.
need=()
for pair in fusermount3:fuse3 dockerd:docker.io skopeo:skopeo runc:runc umoci:umoci podman:podman \
	busybox:busybox-static fio:fio crun:crun; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# The container tests copy busybox into a bare rootfs: it must be the static one.
if command -v busybox >/dev/null 2>&1 && ldd "$(command -v busybox)" >/dev/null 2>&1; then
	need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
	log "apt-get install ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq "${need[@]}" >&2
fi

# Go tools: crane (pushes multi-platform indexes) and the OCI conformance suite.
if ! command -v crane >/dev/null 2>&1; then
	log "go install crane"
	go install github.com/google/go-containerregistry/cmd/crane@v0.22.1 >&2
fi
conf_version=v0.0.0-20260831232431-97274622c111
conf_bin=$cache/conformance-$conf_version
if [ ! -x "$conf_bin" ]; then
	log "building the OCI conformance suite $conf_version"
	work=$(mktemp -d)
	(
		cd "$work"
		go mod init conformance-build >/dev/null 2>&1
		go get github.com/opencontainers/distribution-spec/conformance@$conf_version >&2
		cp -r "$(go env GOMODCACHE)/github.com/opencontainers/distribution-spec/conformance@$conf_version" conf
		chmod -R u+w conf
		cd conf && go mod tidy >&2 && go build -o "$conf_bin.tmp" . >&2
	)
	mv "$conf_bin.tmp" "$conf_bin"
	rm -rf "$work"
fi

# A dockerd of our own when none answers; the caller stops it by PID.
dockerd_pid=""
if ! docker info >/dev/null 2>&1; then
	log "starting dockerd"
	dockerd >"$cache/dockerd.log" 2>&1 &
	dockerd_pid=$!
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && break
		sleep 1
	done
	docker info >/dev/null 2>&1 || { log "dockerd did not start; see $cache/dockerd.log"; tail -20 "$cache/dockerd.log" >&2; exit 1; }
fi

echo "export PATH=\"$gobin:\$PATH\""
echo "export DOCKYARD_CONFORMANCE_BIN=\"$conf_bin\""
echo "export DOCKYARD_DOCKERD_PID=\"$dockerd_pid\""
