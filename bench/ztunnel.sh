#!/usr/bin/env bash
# Ztunnel benchmark: direct vs stunnel4 mTLS pair vs two Ambit ztunnels.
# Run as root from anywhere:  bench/ztunnel.sh [flags]   (see bench/README.md)
# Extra flags go to the Go program, e.g. -rounds 3 -out /tmp/r.json -perf /tmp/prof
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=bench/.tools
mkdir -p "$TOOLS"
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
need=()
command -v stunnel4 >/dev/null || need+=(stunnel4)
command -v iperf3 >/dev/null || need+=(iperf3)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
# iperf3's Debian package may ship an enabled daemon; we run our own in pod namespaces only.
[ -x "$TOOLS/fortio" ] || GOBIN="$PWD/$TOOLS" go install fortio.org/fortio@v1.68.2
# As the Makefile builds it: static (no libc mapped into every ztunnel),
# stripped (which does not change RSS: only loaded sections are mapped).
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$TOOLS/ztunnel" ./cmd/ztunnel
go build -o "$TOOLS/ztunnel-bench" ./bench/ztunnel
exec "$TOOLS/ztunnel-bench" -tools "$TOOLS" "$@"
