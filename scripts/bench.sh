#!/usr/bin/env bash
# `make bench`: every benchmark of docs/benchmarks.md, one after the other.
# Each prints its own table; copy the figures into docs/benchmarks.md with the
# date and the machine's load. The side-by-side scripts need root, a dockerd,
# the reference registry and a weed binary (see each script's header); a
# missing peer is reported and its benchmark skipped, the others still run.
#
#   scripts/bench.sh            # all
#   scripts/bench.sh go meta    # only some: go meta ec p2p fuse registry lazyrun
set -uo pipefail
cd "$(dirname "$0")/.."

which=${*:-go meta ec p2p fuse registry lazyrun}
export DOCKYARD_BIN=${DOCKYARD_BIN:-$PWD/bin/dockyard}
failed=()

run() {
	local name=$1
	shift
	echo "=== $name: $*"
	if ! "$@"; then
		echo "=== $name FAILED"
		failed+=("$name")
	fi
}

for b in $which; do
	case "$b" in
	go) run "go benchmarks" go test -run '^$' -bench . -benchmem -count=1 ./chunkserver/... ./fs/... ./converter/... ./registry/... ./metaserver/... ;;
	meta) run "metaserver creates/lookups" go run ./bench/metabench ;;
	ec) run "erasure-coded data path" go run ./bench/ecbench ;;
	p2p)
		run "peer-to-peer delivery, together" go run ./bench/p2p -clients 8 -size 256 -cs-mbps 200
		run "peer-to-peer delivery, staggered" go run ./bench/p2p -clients 8 -size 256 -cs-mbps 200 -stagger 500ms
		;;
	fuse) run "FUSE mount vs weed mount" bench/fuse/run.sh ;;
	registry) run "registry push/pull vs distribution" bench/registry/run.sh ;;
	lazyrun) run "dockyard run vs docker pull+run" bench/lazyrun/run.sh ;;
	*) echo "unknown benchmark $b (go meta ec p2p fuse registry lazyrun)" >&2; exit 2 ;;
	esac
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}"
	exit 1
fi
