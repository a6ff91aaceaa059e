#!/usr/bin/env bash
# Run the berth-gate benchmark as benchmarks/gate/README.md describes: install wrk and the peers
# (from PyPI, into benchmarks/gate/.peers, not the project's environment), then measure.
# Extra arguments go to bench.py (--rounds, --seconds, --repeat, --targets).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
[ -x .venv/bin/berth-gate ] || BERTH_EXTRAS=test ./deploy/local/setup
command -v wrk >/dev/null || bash tests/system/30-gate.sh
# Each peer in its own virtualenv: installed together, pip settles on an old jhsingle-native-proxy.
if [ ! -x "$here/.peers/jsp/bin/jupyter-standaloneproxy" ]; then
  python3 -m venv "$here/.peers/jsp"
  "$here/.peers/jsp/bin/pip" install --quiet "jupyter-server-proxy[standalone]==4.6.0"
fi
if [ ! -x "$here/.peers/jhsingle/bin/jhsingle-native-proxy" ]; then
  python3 -m venv "$here/.peers/jhsingle"
  "$here/.peers/jhsingle/bin/pip" install --quiet "jhsingle-native-proxy==0.8.3"
fi
exec .venv/bin/python "$here/bench.py" "$@"
