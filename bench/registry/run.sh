#!/usr/bin/env bash
# Registry push/pull benchmark. Pushes and pulls a 1 GiB image (8 layers of
# random bytes) with crane and skopeo over loopback, against `dockyard serve`
# (blobs erasure coded 4+2 over six chunkservers) and the reference registry
# (distribution v3.1.2, filesystem driver), side by side in one run. Every
# round writes a new image (new digests), so no client can skip an upload by
# mounting or reusing blobs it pushed in an earlier round. Prints a Markdown
# table of MB/s (median of RUNS), the registry processes' CPU seconds per GiB,
# and every round's raw seconds. After each `dockyard serve` round it waits
# until the pushed image is converted for lazy mounts (conversion waits for
# transfers to pause, so it runs right after the pull) and reports how long
# that took and what it cost: conversion never runs during another registry's
# round, and its CPU is counted, not hidden. The registries take turns going
# first: run 1 starts with the first variant, run 2 with the next, and so on.
# Each push and pull starts after a `sync` (not timed), so no registry's
# measurement pays for the writeback another left behind.
#
#   bench/registry/run.sh                  # RUNS=5 LAYERS=8 LAYER_MB=128
#
# VARIANTS picks the `dockyard serve` configurations run side by side, each its
# own process on its own data directory (default "fsync nosync"):
#   fsync        the default: every shard fsynced before it is acknowledged
#   nosync       --fsync=false: shards in the page cache only, as the
#                reference's filesystem driver leaves its files
#   http         --shard-http: the registry reaches its own chunkservers over
#                loopback HTTP (the transport before in-process shards)
#   http-nosync  both
#   group        --group-commit: fsyncs share one flush of the file system
#                (syncfs) instead of an fdatasync per shard file and directory
#   unordered    --local-downloads=-1: a local client's blob downloads all
#                send at once instead of in the order it asked for them
#
# Environment: DOCKYARD_BIN (default: built from this checkout), REFERENCE_BIN
# (default: `registry` on PATH or in GOPATH/bin; install it with
# go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2),
# RUNS, LAYERS, LAYER_MB, DY_PORT/META_PORT/REF_PORT (default 15000/19600/15001;
# variant i serves on DY_PORT+2+i, its metaserver on META_PORT+2*i and
# META_PORT+2*i+1), TOOLS ("crane skopeo").
set -euo pipefail

RUNS=${RUNS:-5}
LAYERS=${LAYERS:-8}
LAYER_MB=${LAYER_MB:-128}
DY_PORT=${DY_PORT:-15000}
META_PORT=${META_PORT:-19600}
REF_PORT=${REF_PORT:-15001}
TOOLS=${TOOLS:-crane skopeo}
VARIANTS=${VARIANTS:-fsync nosync}

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-bench-registry.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

die() { echo "bench/registry: $*" >&2; exit 1; }
log() { echo "bench/registry: $*" >&2; }

command -v crane >/dev/null || die "crane is not installed (go install github.com/google/go-containerregistry/cmd/crane@v0.22.1)"
if [[ " $TOOLS " == *" skopeo "* ]] && ! command -v skopeo >/dev/null; then
	die "skopeo is not installed (apt-get install skopeo), or run with TOOLS=crane"
fi
REFERENCE_BIN=${REFERENCE_BIN:-$(command -v registry || echo "$(go env GOPATH)/bin/registry")}
[ -x "$REFERENCE_BIN" ] || die "reference registry not found; go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
if [ -z "${DOCKYARD_BIN:-}" ]; then
	DOCKYARD_BIN=$work/bin/dockyard
	mkdir -p "$work/bin"
	(cd "$root" && go build -o "$DOCKYARD_BIN" ./cmd/dockyard) || die "go build failed"
fi
variant_flags() {
	case $1 in
	fsync) echo "" ;;
	nosync) echo "--fsync=false" ;;
	http) echo "--shard-http" ;;
	http-nosync) echo "--shard-http --fsync=false" ;;
	group) echo "--group-commit" ;;
	unordered) echo "--local-downloads=-1" ;;
	*) die "unknown variant $1 (want fsync, nosync, http, http-nosync, group or unordered)" ;;
	esac
}
declare -A dy_addr
i=0
ports=("$REF_PORT")
for v in $VARIANTS; do
	variant_flags "$v" >/dev/null
	dy_addr[$v]=127.0.0.1:$((DY_PORT + 2 + i))
	ports+=("$((DY_PORT + 2 + i))" "$((META_PORT + 2 * i))" "$((META_PORT + 2 * i + 1))")
	i=$((i + 1))
done
for port in "${ports[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "port $port is in use; set DY_PORT, META_PORT or REF_PORT"
	fi
done

mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/mkimage" ./bench/registry/mkimage) || die "go build mkimage failed"

declare -A dy_pid
i=0
for v in $VARIANTS; do
	log "starting dockyard serve ($v: $(variant_flags "$v")) on ${dy_addr[$v]}"
	# shellcheck disable=SC2046 # the flags are words
	"$DOCKYARD_BIN" serve --data "$work/dockyard-$v" --listen "${dy_addr[$v]}" \
		--meta-listen "127.0.0.1:$((META_PORT + 2 * i))" --chunkserver-base-port 0 --gc-interval 0 --log-level warn \
		$(variant_flags "$v") >"$work/dockyard-$v.log" 2>&1 &
	dy_pid[$v]=$!
	pids+=($!)
	i=$((i + 1))
done

log "starting the reference registry on 127.0.0.1:$REF_PORT"
cat >"$work/reference.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/reference
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REF_PORT
YAML
OTEL_TRACES_EXPORTER=none "$REFERENCE_BIN" serve "$work/reference.yml" >"$work/reference.log" 2>&1 &
ref_pid=$!
pids+=($ref_pid)

wait_up() { # addr pid log
	for _ in $(seq 600); do
		if curl -sf "http://$1/v2/" >/dev/null; then return 0; fi
		kill -0 "$2" 2>/dev/null || break
		sleep 0.1
	done
	cat "$3" >&2
	die "$1 did not come up"
}
for v in $VARIANTS; do
	wait_up "${dy_addr[$v]}" "${dy_pid[$v]}" "$work/dockyard-$v.log"
done
wait_up "127.0.0.1:$REF_PORT" "$ref_pid" "$work/reference.log"

# cpu PID: the process's user+system CPU seconds so far.
tick=$(getconf CLK_TCK)
cpu() { awk -v t="$tick" '{printf "%.2f\n", ($14 + $15) / t}' "/proc/$1/stat"; }

# converted ADDR META REPO: wait until `dockyard serve` on ADDR has converted
# the image just pushed to REPO (its merged tree exists), so that conversion,
# which waits for transfers to pause and so runs right after a pull, never
# runs during the next registry's rounds. Prints the seconds it waited.
converted() {
	local d start
	d=$(curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$1/v2/$3/manifests/bench" |
		tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')
	[ -n "$d" ] || die "no manifest digest for $3 on $1"
	start=$(date +%s.%N)
	for _ in $(seq 1200); do
		if "$DOCKYARD_BIN" stat --meta "$2" "dfs:/.dockyard/images/sha256/${d#sha256:}/rootfs" >/dev/null 2>&1; then
			awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f\n", b - a}'
			return 0
		fi
		sleep 0.1
	done
	die "$1 did not convert $3 within 120 s"
}

# seconds CMD...: run CMD quietly, print its wall-clock seconds.
seconds() {
	local start end
	start=$(date +%s.%N)
	if ! "$@" >"$work/cmd.log" 2>&1; then
		cat "$work/cmd.log" >&2
		die "failed: $*"
	fi
	end=$(date +%s.%N)
	awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f\n", b - a}'
}

push() { # tool addr repo
	case $1 in
	crane) crane push --insecure "$work/image" "$2/$3:bench" ;;
	skopeo) skopeo copy --dest-tls-verify=false "oci:$work/image:bench" "docker://$2/$3:bench" ;;
	esac
}

pull() { # tool addr repo
	rm -rf "$work/pull"
	case $1 in
	crane) crane pull --insecure --format oci "$2/$3:bench" "$work/pull" ;;
	skopeo) skopeo copy --src-tls-verify=false "docker://$2/$3:bench" "oci:$work/pull:bench" ;;
	esac
}

declare -A times cpus
declare -A dy_meta
i=0
for v in $VARIANTS; do
	dy_meta[$v]=127.0.0.1:$((META_PORT + 2 * i))
	i=$((i + 1))
done
for run in $(seq "$RUNS"); do
	rm -rf "$work/image"
	log "run $run: writing a new test image (${LAYERS} x ${LAYER_MB} MiB)"
	"$work/bin/mkimage" -out "$work/image" -layers "$LAYERS" -layer-mb "$LAYER_MB" -seed "$run" || die "mkimage failed"
	bytes=$(find "$work/image/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
	# Each run starts with the next registry in turn: whichever goes first
	# in a round inherits the disk's writeback of the round before (the
	# reference never fsyncs) and the fresh page cache the new image took, so
	# a fixed order would charge that to one registry in every run.
	# shellcheck disable=SC2206 # VARIANTS is a list of words
	regs=($VARIANTS reference)
	shift_by=$(((run - 1) % ${#regs[@]}))
	order=("${regs[@]:shift_by}" "${regs[@]:0:shift_by}")
	for tool in $TOOLS; do
		for reg in "${order[@]}"; do
			addr=${dy_addr[$reg]:-}
			pid=${dy_pid[$reg]:-}
			if [ "$reg" = reference ]; then addr=127.0.0.1:$REF_PORT pid=$ref_pid; fi
			repo=bench/$tool-run$run
			# Every timed step starts on a quiet disk: sync first, untimed.
			# The reference never fsyncs, so without this the disk would
			# still be writing its push (and the new test image) while the
			# next registry's push waits for its own fsyncs.
			sync
			c0=$(cpu "$pid")
			t=$(seconds push "$tool" "$addr" "$repo")
			c1=$(cpu "$pid")
			times[$tool.$reg.push]+="$t "
			sync
			c1s=$(cpu "$pid")
			t=$(seconds pull "$tool" "$addr" "$repo")
			c2=$(cpu "$pid")
			times[$tool.$reg.pull]+="$t "
			cpus[$tool.$reg.push]+="$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}') "
			cpus[$tool.$reg.pull]+="$(awk -v a="$c1s" -v b="$c2" 'BEGIN {print b - a}') "
			rm -rf "$work/pull"
			extra=
			if [ "$reg" != reference ]; then
				w=$(converted "$addr" "${dy_meta[$reg]}" "$repo")
				times[$tool.$reg.convert-wait]+="$w "
				cpus[$tool.$reg.convert]+="$(awk -v a="$c2" -v b="$(cpu "$pid")" 'BEGIN {print b - a}') "
				extra=", converted ${w} s after the pull"
			fi
			log "run $run $tool $reg: push $(echo "${times[$tool.$reg.push]}" | awk '{print $NF}') s pull $t s$extra"
		done
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN {printf "%.0f", b / 1e6 / s}'; }

echo
echo "Image: $LAYERS layers, $bytes bytes; median of $RUNS runs; MB/s = 10^6 bytes per second."
echo
echo "| client | operation | dockyard serve (4+2 EC) | Dockyard MB/s | distribution v3.1.2 MB/s | ratio |"
echo "|---|---|---|---|---|---|"
for tool in $TOOLS; do
	for op in push pull; do
		r=$(echo "${times[$tool.reference.$op]}" | median)
		for v in $VARIANTS; do
			d=$(echo "${times[$tool.$v.$op]}" | median)
			printf '| %s | %s | %s | %s | %s | %.2fx |\n' "$tool" "$op" "$v" "$(mbps "$d")" "$(mbps "$r")" \
				"$(awk -v r="$r" -v d="$d" 'BEGIN {print r / d}')"
		done
	done
done
echo
echo "Registry process CPU seconds per GiB (user + system, median of $RUNS runs; convert: the conversion after the pull):"
echo
echo "| client | operation | registry | CPU-s/GiB |"
echo "|---|---|---|---|"
for k in $(printf '%s\n' "${!cpus[@]}" | sort); do
	IFS=. read -r tool reg op <<<"$k"
	printf '| %s | %s | %s | %s |\n' "$tool" "$op" "$reg" \
		"$(echo "${cpus[$k]}" | median | awk -v b="$bytes" '{printf "%.2f", $1 / (b / 1073741824)}')"
done
echo
echo "Raw seconds per run (convert-wait: from the end of the pull until the image was converted):"
for k in $(printf '%s\n' "${!times[@]}" | sort); do
	echo "  $k: ${times[$k]}"
done
echo "Raw registry CPU seconds per run:"
for k in $(printf '%s\n' "${!cpus[@]}" | sort); do
	echo "  $k: ${cpus[$k]}"
done
