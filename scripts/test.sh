#!/usr/bin/env bash
# Install what the test suite needs and run it, headless. Used by README and .ci/run.
#   - Debian/Ubuntu packages for a virtual X server and Qt's xcb plugin (apt, as root or via sudo)
#   - a virtual environment .venv with torch 2.13.0 (CPU wheel where one is on disk),
#     the package in editable mode and its "testing" extra
#   - pytest under Xvfb (pytest-xvfb starts the server)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
  libxcb-xinerama0 libxcb-cursor0 libxcb-shape0 libxkbcommon-x11-0 libegl1 libgl1
  libfontconfig1 libdbus-1-3)
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: a bare requirement would pull a multi-GB CUDA build here
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[testing,benchmarks]"
exec .venv/bin/python -m pytest "$@"
