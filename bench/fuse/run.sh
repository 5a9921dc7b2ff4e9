#!/usr/bin/env bash
# Side by side, in one run: the FUSE data and metadata path of `dockyard mount` (over `dockyard serve`: one
# metaserver, six chunkservers, 4+2 erasure coding), SeaweedFS `weed mount` (weed server + filer on loopback) and
# the local disk the two store their data on, which is the limit.
#
#   fio, one job, psync:  sequential write of SIZE (bs=1M, end_fsync), sequential read cold (fresh mount, kernel
#                         caches dropped) and warm (the same read again, page cache kept), 4k random reads for
#                         RAND_SECS seconds, cold.
#   metadata:             create, stat and unlink of FILES empty files in one directory, one process.
#
# Needs root (FUSE, drop_caches), fio, python3. WEED names a weed binary (see the peers notes for building it);
# without it the weed column is left out. Everything it starts it stops; everything it makes lives in one
# temporary directory under TMP_BASE (default /var/tmp: a real disk, not tmpfs), removed at the end.
#
#   bench/fuse/run.sh            # SIZE=1G RAND_SECS=20 FILES=10000 WEED=$(command -v weed) DY_MOUNT_ARGS=
#
# DY_MOUNT_ARGS is passed to `dockyard mount`, to compare its options (e.g. --max-write 131072), and
# DY_SERVE_ARGS to `dockyard serve` (e.g. --fsync=false, which leaves shards in the page cache as weed's volume
# server does: its fsync reaches no disk). DY names a dockyard binary to use instead of building this tree, for
# A/B runs of two builds back to back.
#
# For the dockyard column it also prints the CPU seconds the mount process and the serve process (metaserver and
# chunkservers) spent in each fio phase, per GiB moved: on a shared machine CPU per byte is steadier than MB/s.
set -euo pipefail

SIZE=${SIZE:-1G}
RAND_SECS=${RAND_SECS:-20}
FILES=${FILES:-10000}
WEED=${WEED:-$(command -v weed || true)}
TMP_BASE=${TMP_BASE:-/var/tmp}
DY_MOUNT_ARGS=${DY_MOUNT_ARGS:-}
DY_SERVE_ARGS=${DY_SERVE_ARGS:-}
DY=${DY:-}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "$TMP_BASE/fusebench.XXXXXX")
pids=()
mounts=()

cleanup() {
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

die() { echo "fusebench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (FUSE mounts, drop_caches)"
command -v fio >/dev/null || die "no fio"
command -v python3 >/dev/null || die "no python3"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
mounted() { grep -q " $1 " /proc/self/mountinfo; }
waitfor() { # waitfor SECONDS DESCRIPTION COMMAND...
	local end=$((SECONDS + $1)) what=$2; shift 2
	until "$@" 2>/dev/null; do
		[ "$SECONDS" -lt "$end" ] || die "timed out waiting for $what"
		sleep 0.2
	done
}
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

if [ -n "$DY" ]; then
	dy=$DY
else
	echo "building dockyard" >&2
	(cd "$here" && go build -o "$work/dockyard" ./cmd/dockyard)
	dy="$work/dockyard"
fi

# --- dockyard
meta=127.0.0.1:$(freeport)
# shellcheck disable=SC2086 # DY_SERVE_ARGS is a list of flags
"$dy" serve $DY_SERVE_ARGS --data "$work/dy-data" --listen "127.0.0.1:$(freeport)" --meta-listen "$meta" \
	--raft-listen "127.0.0.1:$(freeport)" --chunkserver-base-port 0 --log-level warn >"$work/serve.log" 2>&1 &
dy_serve_pid=$!
pids+=("$dy_serve_pid")
mkdir -p "$work/mnt-dockyard"
dy_mount_pid=""
dy_mount() {
	# shellcheck disable=SC2086 # DY_MOUNT_ARGS is a list of flags
	"$dy" mount --meta "$meta" $DY_MOUNT_ARGS "$work/mnt-dockyard" >>"$work/mount.log" 2>&1 &
	dy_mount_pid=$!
	pids+=("$dy_mount_pid")
	mounts+=("$work/mnt-dockyard")
	waitfor 60 "dockyard mount" mounted "$work/mnt-dockyard"
}
dy_umount() {
	umount "$work/mnt-dockyard"
	wait "$dy_mount_pid" || true
}
waitfor 60 "dockyard serve" listening "${meta##*:}"
dy_mount

# --- weed
if [ -n "$WEED" ]; then
	wdir="$work/weed"
	mkdir -p "$wdir/data" "$wdir/log" "$work/mnt-weed"
	# weed derives its gRPC ports as port+10000, so they cannot come from the
	# ephemeral range; these are its defaults.
	for p in 9333 8080 8888 19333 18080 18888; do
		listening "$p" && die "port $p is in use; weed needs it"
	done
	"$WEED" -logdir="$wdir/log" server -dir="$wdir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=9333 \
		-volume.port=8080 -filer -filer.port=8888 >"$wdir/server.log" 2>&1 &
	pids+=($!)
	waitfor 120 "weed filer" listening 8888
	weed_mount_pid=""
	weed_mount() {
		"$WEED" -logdir="$wdir/log" mount -filer=127.0.0.1:8888 -dir="$work/mnt-weed" >>"$wdir/mount.log" 2>&1 &
		weed_mount_pid=$!
		pids+=("$weed_mount_pid")
		mounts+=("$work/mnt-weed")
		waitfor 60 "weed mount" mounted "$work/mnt-weed"
	}
	weed_umount() {
		umount "$work/mnt-weed" || umount -l "$work/mnt-weed"
		wait "$weed_mount_pid" || true
	}
	weed_mount
fi

mkdir -p "$work/local"

# fio_run DIR NAME RW [FIO ARGS...]: runs one fio job, prints MB/s (randread: IOPS) and the bytes it moved.
fio_run() {
	local dir=$1 name=$2 rw=$3 extra=("${@:4}")
	fio --name="$name" --directory="$dir" --filename=bench.dat --rw="$rw" --size="$SIZE" --ioengine=psync \
		--numjobs=1 --output-format=json "${extra[@]}" >"$work/fio-$name.json"
	python3 - "$work/fio-$name.json" "$rw" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
rw = sys.argv[2]
side = "write" if rw == "write" else "read"
rate = j[side]["iops"] if rw == "randread" else j[side]["bw_bytes"] / 1e6
print("%.0f %d" % (rate, j[side]["io_bytes"]))
EOF
}

# cpu_s PID: user+system CPU seconds the process has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }

declare -A R CPU
# phase NAME KEY DIR RW [FIO ARGS...]: one fio job into R[NAME.KEY]; for dockyard also the CPU seconds per GiB of
# the mount and serve processes into CPU[KEY].
phase() {
	local name=$1 key=$2 m0 s0 rate bytes
	shift 2
	if [ "$name" = dockyard ]; then m0=$(cpu_s "$dy_mount_pid"); s0=$(cpu_s "$dy_serve_pid"); fi
	local d0 d1
	d0=$(awk '$1 == "drop_pagecache" { print $2 }' /proc/vmstat)
	read -r rate bytes < <(fio_run "$1" "$name-$key" "${@:2}")
	d1=$(awk '$1 == "drop_pagecache" { print $2 }' /proc/vmstat)
	# Another process dropping the kernel's caches makes a warm read a cold
	# one; say so rather than report it as a warm figure.
	[ "$d0" = "$d1" ] || echo "fusebench: the page cache was dropped by another process during $name $key" >&2
	R[$name.$key]=$rate
	if [ "$name" = dockyard ]; then
		CPU[$key]=$(awk -v m0="$m0" -v m1="$(cpu_s "$dy_mount_pid")" -v s0="$s0" -v s1="$(cpu_s "$dy_serve_pid")" \
			-v b="$bytes" 'BEGIN { g = b / 2^30; printf "mount %.2f, serve %.2f CPU-s/GiB", (m1 - m0) / g, (s1 - s0) / g }')
	fi
}

meta_rates() { # DIR: create/stat/unlink per second over FILES files
	python3 - "$1" "$FILES" <<'EOF'
import os, sys, time
d = os.path.join(sys.argv[1], "meta"); n = int(sys.argv[2])
os.mkdir(d)
names = [os.path.join(d, "f%06d" % i) for i in range(n)]
t = time.perf_counter()
for p in names: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
c = n / (time.perf_counter() - t)
t = time.perf_counter()
for p in names: os.stat(p)
s = n / (time.perf_counter() - t)
t = time.perf_counter()
for p in names: os.unlink(p)
u = n / (time.perf_counter() - t)
os.rmdir(d)
print("%.0f %.0f %.0f" % (c, s, u))
EOF
}

run_target() { # NAME DIR REMOUNT_FN
	local name=$1 dir=$2 remount=$3
	echo "$name: sequential write $SIZE" >&2
	phase "$name" write "$dir" write --bs=1M --end_fsync=1
	$remount; dropcaches
	echo "$name: cold read" >&2
	phase "$name" cold "$dir" read --bs=1M
	echo "$name: warm read" >&2
	# invalidate=0: fio would otherwise drop the file's page cache first,
	# and a warm reader is exactly one that finds it.
	phase "$name" warm "$dir" read --bs=1M --invalidate=0
	$remount; dropcaches
	echo "$name: 4k random read, ${RAND_SECS}s" >&2
	phase "$name" rand "$dir" randread --bs=4k --time_based --runtime="$RAND_SECS"
	rm -f "$dir/bench.dat"
	echo "$name: $FILES files" >&2
	read -r c s u < <(meta_rates "$dir")
	R[$name.create]=$c R[$name.stat]=$s R[$name.unlink]=$u
}

dy_remount() { dy_umount; dy_mount; }
run_target dockyard "$work/mnt-dockyard" dy_remount
cols=(dockyard)
if [ -n "$WEED" ]; then
	weed_remount() { weed_umount; weed_mount; }
	run_target weed "$work/mnt-weed" weed_remount
	cols+=(weed)
fi
run_target local "$work/local" true
cols+=(local)

printf '\n| %-28s |' "SIZE=$SIZE, FILES=$FILES"
for c in "${cols[@]}"; do printf ' %12s |' "$c"; done
printf '\n|%s|' "------------------------------"
for _ in "${cols[@]}"; do printf '%s|' "--------------"; done
printf '\n'
for row in "write:seq write MB/s" "cold:seq read cold MB/s" "warm:seq read warm MB/s" "rand:4k random read IOPS" \
	"create:creates/s" "stat:stats/s" "unlink:unlinks/s"; do
	k=${row%%:*}
	printf '| %-28s |' "${row#*:}"
	for c in "${cols[@]}"; do printf ' %12s |' "${R[$c.$k]}"; done
	printf '\n'
done
printf '\ndockyard CPU per GiB moved:\n'
for k in write cold warm rand; do printf '  %-6s %s\n' "$k" "${CPU[$k]}"; done
printf '\ndockyard mount sessions so far (write; then cold + warm read):\n'
grep -h 'unmounted' "$work/mount.log" | sed 's/^/  /' || true
