#!/usr/bin/env bash
# Install the browser the dashboard's browser tests drive (tests/browser/): Debian's
# chromium, run by Playwright through `executable_path`. `playwright install` downloads
# its own builds from a CDN, which this project does not rely on. Idempotent: nothing to
# do when the browser is there. Needs root for apt-get; prints what to do otherwise.
#
# Environment:
#   BUDGETFLOW_CHROMIUM   the browser's path (default: /usr/bin/chromium); the tests read it too
set -euo pipefail

CHROMIUM="${BUDGETFLOW_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$CHROMIUM" != /usr/bin/chromium ]; then
  echo "BUDGETFLOW_CHROMIUM=$CHROMIUM is not an executable; point it at a chromium, or unset it to use Debian's" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system package: chromium; install it (sudo apt-get install chromium) and rerun" >&2
  exit 1
fi
echo "installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
"$CHROMIUM" --version
