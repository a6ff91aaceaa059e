#!/usr/bin/env bash
# PostgreSQL from Debian, for berth-culler's ledger tests and benchmark. The tests start their own
# server (initdb in a temporary directory, a free port on 127.0.0.1); the system service is not used.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
