#!/usr/bin/env bash
# Make sure Debian's `wrk` is there for the closed-loop part of `make bench-intake`.
# Idempotent: does nothing when wrk is on PATH. As root with apt-get it installs the
# package; otherwise it says that the closed-loop part will be skipped and exits 0 (the
# open-loop load, its baselines and the downstream count run without it).
# WRK_INSTALL=0 turns the installation off.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "${WRK_INSTALL:-1}" != "1" ] || [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "wrk not found and not installable here (needs root and apt-get):" \
       "bench-intake will skip its closed-loop maximum. Install Debian's 'wrk' package for it." >&2
  exit 0
fi
echo "wrk not found: installing Debian's 'wrk' package ..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
command -v wrk >/dev/null && echo "wrk installed: $(wrk --version 2>&1 | head -1)" >&2
