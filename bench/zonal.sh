#!/usr/bin/env bash
# Zonal routing experiment (issue 6, seed 000) on the local cluster.
# Run as root from anywhere:  bench/zonal.sh [flags]   (see docs/zonal.md)
# Flags go to the Go program, e.g. -t 20s -qps 50 -out bench/results/zonal-DATE.txt
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=bench/.tools
mkdir -p "$TOOLS/zonal"
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
[ -x "$TOOLS/fortio" ] || GOBIN="$PWD/$TOOLS" go install fortio.org/fortio@v1.68.2
# The binaries the cluster runs, as the Makefile builds them, kept apart
# from bin/ so a concurrent 'make build' cannot swap them mid-run.
CGO_ENABLED=0 go build -o "$TOOLS/zonal/" ./cmd/ambit ./cmd/ztunnel ./cmd/waypoint
go build -o "$TOOLS/zonal-bench" ./bench/zonal
exec "$TOOLS/zonal-bench" -bin "$TOOLS/zonal" -fortio "$TOOLS/fortio" "$@"
