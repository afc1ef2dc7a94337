#!/usr/bin/env bash
# Make sure a command from a Debian package is there: ensure-debian-tool.sh COMMAND PACKAGE
# INSTALL_VAR WHAT. Idempotent: does nothing when COMMAND is on PATH. As root with apt-get,
# it installs PACKAGE (without starting any service the package ships, e.g. Prometheus on
# port 9090); otherwise it says that WHAT will be skipped and exits 0 (the callers skip
# with a reason). The environment variable named INSTALL_VAR set to 0 turns the
# installation off.
set -euo pipefail
cmd=$1 pkg=$2 install_var=$3 what=$4
if command -v "$cmd" >/dev/null 2>&1; then
  exit 0
fi
if [ "${!install_var:-1}" != "1" ] || [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$cmd not found and not installable here (needs root and apt-get):" \
       "$what will be SKIPPED. Install Debian's '$pkg' package for it." >&2
  exit 0
fi
echo "$cmd not found: installing Debian's '$pkg' package ..." >&2
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
fi
command -v "$cmd" >/dev/null && echo "$cmd installed: $("$cmd" --version 2>&1 | head -1)" >&2
