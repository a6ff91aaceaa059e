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
if [ ! -x "$here/.peers/bin/jupyter-standaloneproxy" ] || [ ! -x "$here/.peers/bin/jhsingle-native-proxy" ]; then
  python3 -m venv "$here/.peers"
  "$here/.peers/bin/pip" install --quiet "jupyter-server-proxy[standalone]==4.6.0" "jhsingle-native-proxy"
fi
exec .venv/bin/python "$here/bench.py" "$@"
