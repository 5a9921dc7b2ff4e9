#!/usr/bin/env bash
# Side by side: time to a container's exit with `dockyard run` (lazy: the image is mounted from the file system
# and only what the command reads is fetched) against `docker pull` + `docker run` from the same registry, for an
# image of SIZE_MB of incompressible payload plus busybox, whose command (/bin/true) reads almost none of it.
# Also counts the shard bytes the chunkservers sent for each (their dockyard_chunkserver_bytes_out_total).
#
# Needs root (FUSE, runc), a running dockerd, crane, a static busybox, curl. Everything it starts it stops;
# everything it makes lives in one temporary directory, removed at the end.
#
#   bench/lazyrun/run.sh            # SIZE_MB=512 PORT=5077 META=9577 CS=9677 RUNS=3
set -euo pipefail

SIZE_MB=${SIZE_MB:-512}
PORT=${PORT:-5077}
META=${META:-9577}
CS=${CS:-9677}
RUNS=${RUNS:-3}
BUSYBOX=${BUSYBOX:-$(command -v busybox)}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
serve_pid=""
ref="127.0.0.1:$PORT/lazyrun/payload:$SIZE_MB"

cleanup() {
	docker rmi -f "$ref" >/dev/null 2>&1 || true
	if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

die() { echo "lazyrun: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (FUSE mount and runc)"
[ -x "$BUSYBOX" ] || die "no busybox (set BUSYBOX to a static one)"
docker info >/dev/null 2>&1 || die "dockerd is not running"
command -v crane >/dev/null || die "no crane"

echo "building dockyard" >&2
(cd "$here" && go build -o "$work/dockyard" ./cmd/dockyard)
dy="$work/dockyard"

echo "making a ${SIZE_MB} MB image" >&2
root="$work/rootfs"
mkdir -p "$root/bin" "$root/payload" "$root/tmp" "$root/etc"
cp "$BUSYBOX" "$root/bin/busybox"
for t in sh true cat ls; do ln -s busybox "$root/bin/$t"; done
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$root/payload/blob"
tar -C "$root" --numeric-owner -cf "$work/layer.tar" .
rm -rf "$root"

"$dy" serve --data "$work/data" --listen "127.0.0.1:$PORT" --meta-listen "127.0.0.1:$META" \
	--chunkserver-base-port "$CS" --log-level warn >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 600); do
	curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; die "dockyard serve exited"; }
	sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null || die "registry did not come up"

echo "pushing" >&2
t0=$(date +%s.%N)
crane append --insecure -f "$work/layer.tar" -t "$ref.base" >/dev/null 2>"$work/crane.log" || { cat "$work/crane.log" >&2; die "push failed"; }
crane mutate --insecure --set-platform linux/amd64 --cmd /bin/true -t "$ref" "$ref.base" >/dev/null 2>>"$work/crane.log" || { cat "$work/crane.log" >&2; die "mutate failed"; }
manifest=$(crane digest --insecure "$ref")
t1=$(date +%s.%N)
rm -f "$work/layer.tar"
# The push hook indexes the image in the background; wait for its tree.
tree="dfs:/.dockyard/images/${manifest%%:*}/${manifest#*:}/rootfs"
for _ in $(seq 1200); do
	"$dy" stat --meta "127.0.0.1:$META" "$tree" >/dev/null 2>&1 && break
	sleep 0.1
done
"$dy" stat --meta "127.0.0.1:$META" "$tree" >/dev/null 2>&1 || die "image was not indexed after push"
t2=$(date +%s.%N)

bytes_out() {
	local sum=0 i v
	for i in $(seq 0 5); do
		v=$(curl -fs "http://127.0.0.1:$((CS + i))/metrics" | awk '$1 == "dockyard_chunkserver_bytes_out_total" {printf "%d", $2}')
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}
image_bytes=$(crane manifest --insecure "$ref" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])')

printf 'push %.1f s, indexed %.1f s after push; image %d bytes\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$image_bytes"
printf '%-28s %10s %14s %8s %s\n' "run" "seconds" "bytes read" "% image" "(dockyard: mounted after)"
for r in $(seq "$RUNS"); do
	b0=$(bytes_out); s=$(date +%s.%N)
	"$dy" run --verbose --meta "127.0.0.1:$META" --state-dir "$work/state" --span-cache-dir "$work/spans-$r" "$ref" >/dev/null 2>"$work/run.log" ||
		{ cat "$work/run.log" >&2; die "dockyard run failed"; }
	e=$(date +%s.%N); b1=$(bytes_out)
	mounted=$(sed -n 's/.*msg="image mounted".* after=\([^ ]*\).*/\1/p' "$work/run.log")
	printf '%-28s %10.2f %14d %8.2f %s\n' "dockyard run #$r" "$(echo "$e - $s" | bc)" "$((b1 - b0))" "$(echo "100 * ($b1 - $b0) / $image_bytes" | bc -l)" "$mounted"

	docker rmi -f "$ref" >/dev/null 2>&1 || true
	b0=$(bytes_out); s=$(date +%s.%N)
	docker pull -q "$ref" >/dev/null
	docker run --rm --network none "$ref" >/dev/null
	e=$(date +%s.%N); b1=$(bytes_out)
	printf '%-28s %10.2f %14d %8.2f\n' "docker pull + run #$r" "$(echo "$e - $s" | bc)" "$((b1 - b0))" "$(echo "100 * ($b1 - $b0) / $image_bytes" | bc -l)"
	docker rmi -f "$ref" >/dev/null 2>&1 || true
done
