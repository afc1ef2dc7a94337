#!/usr/bin/env bash
# Debian's `wrk` for the closed-loop part of `make bench-intake`; as root with apt-get it
# is installed, else that part is skipped (the open-loop load, its baselines and the
# downstream count run without it). WRK_INSTALL=0: no install.
exec "$(dirname "$0")/ensure-debian-tool.sh" wrk wrk WRK_INSTALL \
  "bench-intake's closed-loop maximum"
