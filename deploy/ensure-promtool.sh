#!/usr/bin/env bash
# Make sure promtool (Debian's `prometheus` package) is there for the rule tests of
# `make test`. Idempotent: does nothing when promtool is on PATH. As root with apt-get, it
# installs the package (without starting the Prometheus service it ships); otherwise it
# says that the promtool tests will be skipped, and exits 0 (the tests skip with a reason).
# PROMTOOL_INSTALL=0 turns the installation off.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "${PROMTOOL_INSTALL:-1}" != "1" ] || [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool not found and not installable here (needs root and apt-get):" \
       "the Prometheus rule tests will be SKIPPED. Install Debian's 'prometheus' package to run them." >&2
  exit 0
fi
echo "promtool not found: installing Debian's 'prometheus' package (for promtool) ..." >&2
# Keep the package's own Prometheus service from starting (it would take port 9090).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null && echo "promtool installed: $(promtool --version 2>&1 | head -1)" >&2
