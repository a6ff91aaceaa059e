#!/usr/bin/env bash
# berth-gate's system packages: wrk (the benchmark's load generator) and ttyd (the terminal
# service) when this Debian release has it. Debian 12 (bookworm) has no ttyd package; there the
# terminal tests run the stand-in (tests/standins/ttyd.py) and only the real-ttyd variant is
# skipped. Idempotent; needs root.
set -euo pipefail
want=()
command -v wrk >/dev/null || want+=(wrk)
if ! command -v ttyd >/dev/null; then
  if [ -z "$(apt-cache policy ttyd 2>/dev/null | awk '/Candidate:/ {print $2}')" ]; then
    apt-get update -qq
  fi
  candidate="$(apt-cache policy ttyd 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    want+=(ttyd)
  else
    echo "ttyd: no package in this Debian release; the terminal tests use the stand-in"
  fi
fi
if [ "${#want[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
fi
