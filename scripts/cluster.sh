#!/usr/bin/env bash
# A multi-process Dockyard cluster on one machine: 3 metaservers (Raft),
# 7 chunkservers labelled with three zones, and 2 registries over the same
# metadata. Every process is its own `dockyard` with its own data directory,
# exactly as on separate machines (replace 127.0.0.1 by each machine's
# address there).
#
#   scripts/cluster.sh start [DIR]    # default DIR ./dockyard-cluster
#   scripts/cluster.sh status [DIR]
#   scripts/cluster.sh stop [DIR]     # SIGTERM, then SIGKILL after 10 s
#   scripts/cluster.sh kill NAME [DIR]   # SIGKILL one process: meta1..3, chunk1..7, registry1..2
#   scripts/cluster.sh restart NAME [DIR]
#
# Ports: metaserver APIs 9500/9510/9520 (Raft +1), chunkservers 9600-9606,
# registries 5000 and 5001. DOCKYARD_BIN picks the binary (default bin/dockyard,
# built when missing). Every process holds DIR/cluster-secret (made on first
# start), so only they can talk cluster traffic; to use the cluster from
# another command, export DOCKYARD_CLUSTER_SECRET_FILE=DIR/cluster-secret.
set -euo pipefail

cmd=${1:-}
case "$cmd" in
kill | restart) name=${2:?"$cmd needs a process name"}; dir=${3:-./dockyard-cluster} ;;
*) dir=${2:-./dockyard-cluster} ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DOCKYARD_BIN:-$root/bin/dockyard}
metas=127.0.0.1:9500,127.0.0.1:9510,127.0.0.1:9520
export DOCKYARD_CLUSTER_SECRET_FILE=$dir/cluster-secret

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# args NAME prints the command line of one process.
args() {
	local n=$1 i
	case "$n" in
	meta1) echo metaserver --id meta1 --data "$dir/meta1" --listen 127.0.0.1:9500 --raft 127.0.0.1:9501 ;;
	meta2) echo metaserver --id meta2 --data "$dir/meta2" --listen 127.0.0.1:9510 --raft 127.0.0.1:9511 --join 127.0.0.1:9500 ;;
	meta3) echo metaserver --id meta3 --data "$dir/meta3" --listen 127.0.0.1:9520 --raft 127.0.0.1:9521 --join 127.0.0.1:9500 ;;
	chunk[1-7])
		i=${n#chunk}
		local zones=(a b c)
		echo chunkserver --data "$dir/$n" --listen "127.0.0.1:$((9599 + i))" --meta "$metas" --label "zone=${zones[$(((i - 1) % 3))]}"
		;;
	registry1) echo registry --listen 127.0.0.1:5000 --meta "$metas" ;;
	registry2) echo registry --listen 127.0.0.1:5001 --meta "$metas" ;;
	*) die "unknown process $n (meta1..3, chunk1..7, registry1..2)" ;;
	esac
}

all="meta1 meta2 meta3 chunk1 chunk2 chunk3 chunk4 chunk5 chunk6 chunk7 registry1 registry2"

pidof_() { [ -f "$dir/$1.pid" ] && cat "$dir/$1.pid"; }
running() { local p; p=$(pidof_ "$1" || true); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start_one() {
	local n=$1
	running "$n" && { log "$n already running (pid $(pidof_ "$n"))"; return; }
	mkdir -p "$dir/$n"
	# shellcheck disable=SC2046
	"$bin" $(args "$n") >>"$dir/$n.log" 2>&1 &
	echo $! >"$dir/$n.pid"
	log "started $n (pid $!), log $dir/$n.log"
}

wait_http() {
	local url=$1 what=$2
	for _ in $(seq 1 150); do
		curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
		sleep 0.2
	done
	die "$what did not answer at $url"
}

case "$cmd" in
start)
	[ -x "$bin" ] || (cd "$root" && make build >/dev/null)
	mkdir -p "$dir"
	if [ ! -f "$DOCKYARD_CLUSTER_SECRET_FILE" ]; then
		(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DOCKYARD_CLUSTER_SECRET_FILE")
		log "made the cluster secret $DOCKYARD_CLUSTER_SECRET_FILE"
	fi
	start_one meta1
	wait_http http://127.0.0.1:9500/healthz "meta1"
	start_one meta2
	start_one meta3
	for i in 1 2 3 4 5 6 7; do start_one "chunk$i"; done
	start_one registry1
	start_one registry2
	wait_http http://127.0.0.1:5000/v2/ registry1
	wait_http http://127.0.0.1:5001/v2/ registry2
	"$bin" admin status --meta "$metas"
	;;
status)
	for n in $all; do
		if running "$n"; then echo "$n running (pid $(pidof_ "$n"))"; else echo "$n stopped"; fi
	done
	"$bin" admin status --meta "$metas" || true
	;;
stop)
	for n in $all; do running "$n" && kill -TERM "$(pidof_ "$n")" 2>/dev/null || true; done
	for _ in $(seq 1 50); do
		alive=0
		for n in $all; do running "$n" && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for n in $all; do running "$n" && { log "$n did not stop; SIGKILL"; kill -KILL "$(pidof_ "$n")"; }; done
	rm -f "$dir"/*.pid
	log "stopped"
	;;
kill)
	running "$name" || die "$name is not running"
	kill -KILL "$(pidof_ "$name")"
	rm -f "$dir/$name.pid"
	log "killed $name"
	;;
restart)
	running "$name" && { kill -TERM "$(pidof_ "$name")"; sleep 1; }
	start_one "$name"
	;;
*)
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
