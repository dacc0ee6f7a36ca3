#!/usr/bin/env bash
# Install the system services the test suite starts for real (redis-server, PostgreSQL,
# Prometheus with promtool), when they are missing. Needs root for apt-get; prints what to
# do otherwise.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and rerun" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the packages start services on install where an init system runs; the suite starts its own
service redis-server stop >/dev/null 2>&1 || true
service prometheus stop >/dev/null 2>&1 || true
