#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: ffmpeg (Debian's package) when missing,
# then a virtual environment in .venv with the package and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "setup: installing ffmpeg from Debian's package" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

# Chromium (Debian's package) drives the one real-browser test (tests/test_ui_browser.py, marked slow):
# installed for `make test-slow` (SETUP_BROWSER=1), not for the demo.
if [ "${SETUP_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium from Debian's package (for the slow browser test)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || echo "setup: chromium could not be installed; the browser test will be skipped" >&2
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: making the virtual environment .venv" >&2
  "$python" -m venv .venv
fi
echo "setup: installing prefect-modify-video into .venv" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,dask]'
