#!/usr/bin/env bash
# Waypoint benchmark: the waypoint as an HTTP hop against nginx and haproxy.
# Run as root from anywhere:  bench/waypoint.sh [flags]   (see bench/README.md)
# Extra flags go to the Go program, e.g. -rounds 3 -t 20s -out /tmp/r.json
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=bench/.tools
mkdir -p "$TOOLS"
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  # The packages would start their daemons in the host's namespace: keep
  # them from starting (policy-rc.d); the benchmark runs its own in
  # namespaces it creates.
  norc=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && norc=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  [ -z "$norc" ] || rm -f /usr/sbin/policy-rc.d
fi
[ -x "$TOOLS/fortio" ] || GOBIN="$PWD/$TOOLS" go install fortio.org/fortio@v1.68.2
# As the Makefile builds it.
CGO_ENABLED=0 go build -o "$TOOLS/waypoint" ./cmd/waypoint
go build -o "$TOOLS/waypoint-bench" ./bench/waypoint
exec "$TOOLS/waypoint-bench" -tools "$TOOLS" "$@"
