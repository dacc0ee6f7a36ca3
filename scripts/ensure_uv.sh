#!/usr/bin/env bash
# Make sure `uv` is available; install it with pip when it is not.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then
  exit 0
fi
python3 -m pip install --quiet uv
