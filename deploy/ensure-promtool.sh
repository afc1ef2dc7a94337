#!/usr/bin/env bash
# promtool (Debian's `prometheus` package) for the rule tests of `make test`; as root with
# apt-get it is installed, else the promtool tests skip. PROMTOOL_INSTALL=0: no install.
exec "$(dirname "$0")/ensure-debian-tool.sh" promtool prometheus PROMTOOL_INSTALL \
  "the Prometheus rule tests"
