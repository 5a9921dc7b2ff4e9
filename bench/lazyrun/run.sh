#!/usr/bin/env bash
# Lazy-run benchmark: time to the exit of an image's command with
# `dockyard run` on a cold host cache, side by side with `docker pull` +
# `docker run` from the same registry, and the bytes each read from the
# chunkservers. The image is a static busybox plus a PAYLOAD_MB file of random
# bytes (incompressible, so the layer is as large as the image) that the
# command never reads: `/bin/true`.
#
#   bench/lazyrun/run.sh                 # RUNS=5 PAYLOAD_MB=512
#
# Needs root, dockerd running, busybox-static. Environment: DOCKYARD_BIN
# (default: built from this checkout), RUNS, PAYLOAD_MB, DY_PORT/META_PORT
# (default 15100/19700). Prints a Markdown table (medians) and every round.
set -euo pipefail

RUNS=${RUNS:-5}
PAYLOAD_MB=${PAYLOAD_MB:-512}
DY_PORT=${DY_PORT:-15100}
META_PORT=${META_PORT:-19700}

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-bench-lazyrun.XXXXXX")
pids=()
log() { echo "bench/lazyrun: $*" >&2; }
die() { log "$*"; exit 1; }
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	docker rmi -f "127.0.0.1:$DY_PORT/bench/lazy:1" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "needs root (FUSE, overlay, runc, dropping the page cache)"
docker info >/dev/null 2>&1 || die "needs a running dockerd"
bb=$(command -v busybox) || die "needs busybox-static"
bin=${DOCKYARD_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/dockyard
	(cd "$root" && go build -o "$bin" ./cmd/dockyard)
fi

log "starting dockyard serve"
"$bin" serve --data "$work/data" --listen "127.0.0.1:$DY_PORT" --meta-listen "127.0.0.1:$META_PORT" \
	--chunkserver-base-port 0 --log-level warn >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	curl -fsS "http://127.0.0.1:$DY_PORT/v2/" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fsS "http://127.0.0.1:$DY_PORT/v2/" >/dev/null || die "dockyard serve did not start: $(tail -5 "$work/serve.log")"

log "building a $PAYLOAD_MB MB image and pushing it with docker"
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/payload" "$rootfs/etc" "$rootfs/tmp"
cp "$bb" "$rootfs/bin/busybox"
for a in sh true cat ls; do ln -s busybox "$rootfs/bin/$a"; done
head -c "$((PAYLOAD_MB << 20))" /dev/urandom >"$rootfs/payload/blob.bin"
tar -C "$rootfs" -cf "$work/rootfs.tar" .
ref=127.0.0.1:$DY_PORT/bench/lazy:1
docker import "$work/rootfs.tar" "$ref" >/dev/null
docker push "$ref" >/dev/null
image_bytes=$(docker image inspect "$ref" --format '{{.Size}}')
# Give the background indexer time to finish, then make sure it did: the run
# side measures starting a container, not first-time indexing.
"$bin" run --meta "127.0.0.1:$META_PORT" --state-dir "$work/state" "$ref" -- /bin/true

chunk_bytes_out() {
	local total=0 addr v
	for addr in $("$bin" admin chunkservers ls --json --meta "127.0.0.1:$META_PORT" | grep '"addr"' | sed 's/.*"addr": "\([^"]*\)".*/\1/'); do
		v=$(curl -fsS "http://$addr/metrics" | awk '$1=="dockyard_chunkserver_bytes_out_total"{print $2}')
		total=$((total + ${v%.*}))
	done
	echo "$total"
}
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

dy_times=() dy_bytes=() dk_times=() dk_bytes=()
for i in $(seq 1 "$RUNS"); do
	cold
	b0=$(chunk_bytes_out); t0=$(now)
	"$bin" run --meta "127.0.0.1:$META_PORT" --state-dir "$work/state" "$ref" -- /bin/true
	t1=$(now); b1=$(chunk_bytes_out)
	dy_times+=("$(echo "$t1 - $t0" | bc)"); dy_bytes+=($((b1 - b0)))

	docker rmi -f "$ref" >/dev/null
	cold
	b0=$(chunk_bytes_out); t0=$(now)
	docker pull -q "$ref" >/dev/null
	docker run --rm --network none "$ref" /bin/true
	t1=$(now); b1=$(chunk_bytes_out)
	dk_times+=("$(echo "$t1 - $t0" | bc)"); dk_bytes+=($((b1 - b0)))
	log "round $i: dockyard run ${dy_times[-1]} s, ${dy_bytes[-1]} B read; docker pull+run ${dk_times[-1]} s, ${dk_bytes[-1]} B read"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dt=$(median "${dy_times[@]}"); kt=$(median "${dk_times[@]}")
db=$(median "${dy_bytes[@]}"); kb=$(median "${dk_bytes[@]}")
echo
echo "image: $image_bytes bytes uncompressed (busybox + $PAYLOAD_MB MB payload), command /bin/true, median of $RUNS, cold page cache"
echo
echo "| | time to exit (s) | bytes read from chunkservers | share of image |"
echo "|---|---|---|---|"
printf '| dockyard run | %.2f | %d | %.2f%% |\n' "$dt" "$db" "$(echo "100 * $db / $image_bytes" | bc -l)"
printf '| docker pull + docker run | %.2f | %d | %.2f%% |\n' "$kt" "$kb" "$(echo "100 * $kb / $image_bytes" | bc -l)"
printf '\nspeed-up: %.1fx\n' "$(echo "$kt / $dt" | bc -l)"
echo
echo "rounds (s): dockyard ${dy_times[*]}; docker ${dk_times[*]}"
