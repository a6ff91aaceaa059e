#!/usr/bin/env bash
# The real single-node Slurm cluster the `slurm` tests and benchmarks/slurm use (root, Debian 12):
# deploy/slurm/dev-cluster with the test users, and the environment jobs run in.
#
# Jobs run as the test users, who cannot use the hub's .venv when its Python lives somewhere
# private (pyenv under /root), so jobs get their own virtualenv made with Debian's python3 at
# /opt/berth-slurm-jobs/venv (BERTH_SLURM_JOB_VENV), with this checkout of Berth and JupyterLab:
# on a real cluster this is the software environment the compute nodes share.
# Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${BERTH_SLURM_JOB_VENV:-/opt/berth-slurm-jobs/venv}"

"$root/deploy/slurm/dev-cluster" --user berth-alice --user berth-bob --user berth-bench

if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "20-slurm: making the jobs' virtualenv $venv"
  install -d -m 0755 "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
  pip_quietly --upgrade pip
fi
pip_quietly() {
  local log
  log="$(mktemp)"
  "$venv/bin/python" -m pip install --quiet "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
  rm -f "$log"
}
# Editable when every directory down to the checkout is open to the test users, else a copy.
open=1
dir="$root"
while [ "$dir" != "/" ]; do
  [ "$(( 0$(stat -c %a "$dir") & 01 ))" -ne 0 ] || open=0
  dir="$(dirname "$dir")"
done
if [ $open = 1 ]; then
  pip_quietly -e "$root[jupyter]"
else
  pip_quietly "$root[jupyter]"
  pip_quietly --no-deps --force-reinstall "$root"
fi
chmod -R a+rX "$venv"
runuser -u berth-alice -- "$venv/bin/berth-slurm-job" --help >/dev/null
echo "20-slurm: cluster up; jobs run Berth from $venv"
