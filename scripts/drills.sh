#!/usr/bin/env bash
# Runs Dockyard's failure drills in their long versions (50 pushes through
# leader kills, bigger data sets, longer partitions) against a freshly built
# bin/dockyard, and prints each drill's figures at the end. CI runs the same
# tests in their short versions as part of `make test`.
#
#   scripts/drills.sh              # every drill
#   scripts/drills.sh Partition    # only drills whose test name matches
#
# Needs root (FUSE mounts, tmpfs, network namespaces), crane, iproute2 and
# fuse3; `scripts/test-setup.sh` installs them. The full log goes to
# bin/drills-output.log.
set -euo pipefail
cd "$(dirname "$0")/.."

filter=${1:-}
# DOCKYARD_BIN drills a binary built elsewhere; by default this checkout's.
if [ -z "${DOCKYARD_BIN:-}" ]; then
	make build >/dev/null
	export DOCKYARD_BIN="$PWD/bin/dockyard"
fi
mkdir -p bin
export DOCKYARD_DRILLS=long
export PATH="$(go env GOPATH)/bin:$PATH"

start=$(date +%s)
status=0
go test -count=1 -timeout 60m -v -run "TestDrill.*${filter}" ./e2e/ >bin/drills-output.log 2>&1 || status=$?
echo "drills: $(($(date +%s) - start)) s, log in bin/drills-output.log" >&2
grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|ok|FAIL)|DRILL |KNOWN BUG' bin/drills-output.log | sed 's/^ *//' || true
exit $status
