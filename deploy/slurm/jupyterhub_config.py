"""A Berth hub whose sessions are Slurm jobs.

As written it drives the single-node dev cluster of deploy/slurm/dev-cluster (start it with
deploy/slurm/start-hub). On a login node, change the lines marked LOGIN NODE; see README.md.
"""

import os
from pathlib import Path

import berth.hub_config

c = get_config()  # type: ignore[name-defined]  # noqa: F821  (provided by JupyterHub)
here = Path(__file__).resolve().parent

# The catalog; its `backend: slurm` makes every profile a Slurm job (and registers the endpoint
# jobs report their port to).
berth.hub_config.configure(c, os.environ.get("BERTH_CATALOG", str(here / "state" / "berth.yaml")))

# Where the hub listens. LOGIN NODE: the public URL people use, and a hub API address the
# compute nodes can reach, e.g. hub_bind_url "http://0.0.0.0:8081" with hub_connect_url
# "http://login01.cluster:8081".
c.JupyterHub.bind_url = os.environ.get("BERTH_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_bind_url = os.environ.get("BERTH_HUB_API_URL", "http://127.0.0.1:8081")
c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"  # in the state directory (the cwd)
c.JupyterHub.cookie_secret_file = "jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "jupyterhub-proxy.pid"

# Who may log in. The dev cluster's users have no passwords, so a shared password stands in.
# LOGIN NODE: c.JupyterHub.authenticator_class = "pam" (or your site's OAuth/LDAP), with hub
# user names equal to the users' system names: jobs run as the system user of the same name.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ["BERTH_USER_PASSWORD"]
c.SharedPasswordAuthenticator.admin_password = os.environ["BERTH_ADMIN_PASSWORD"]
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allowed_users = set(os.environ.get("BERTH_SLURM_USERS", "").split())

# How jobs run. LOGIN NODE: the environment on the shared filesystem where Berth is installed,
# and node_addresses only if node names do not resolve on the login node.
venv = os.environ.get("BERTH_SLURM_JOB_VENV", "/opt/berth-slurm-jobs/venv")
c.BerthSlurmSpawner.job_setup = [f"source {venv}/bin/activate"]
c.BerthSlurmSpawner.node_addresses = {"berth-node": "127.0.0.1"}
c.BerthSlurmSpawner.job_bind_ip = "127.0.0.1"  # LOGIN NODE: "0.0.0.0" or the node's address
