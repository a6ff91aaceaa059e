#!/usr/bin/env bash
# The real single-node Slurm cluster the `slurm` tests and benchmarks/slurm use (root, Debian 12):
# deploy/slurm/dev-cluster with the test users, and deploy/slurm/job-env, the virtualenv jobs run
# Berth and JupyterLab from (BERTH_SLURM_JOB_VENV, default /opt/berth-slurm-jobs/venv).
# Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$root/deploy/slurm/dev-cluster" --user berth-alice --user berth-bob --user berth-bench
"$root/deploy/slurm/job-env"
runuser -u berth-alice -- "${BERTH_SLURM_JOB_VENV:-/opt/berth-slurm-jobs/venv}/bin/berth-slurm-job" --help >/dev/null
