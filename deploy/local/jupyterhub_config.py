"""A hub on one machine: the local backend, sqlite, and a shared-password login.

Run it with ./deploy/local/start-hub (which sets the passwords and the working directory).
"""

import os
from pathlib import Path

import berth.hub_config

c = get_config()  # type: ignore[name-defined]  # noqa: F821  (provided by JupyterHub)
here = Path(__file__).resolve().parent

# The one line every Berth hub needs: the catalog of services, profiles and policies.
berth.hub_config.configure(
    c, os.environ.get("BERTH_CATALOG", str(here.parent.parent / "hub_config/examples/berth.yaml"))
)

# What a single box needs besides: where to listen, where to keep state, how people log in.
c.JupyterHub.bind_url = os.environ.get("BERTH_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"  # in the state directory (the cwd)
c.JupyterHub.cookie_secret_file = "jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "jupyterhub-proxy.pid"

# Anyone who knows the user password may log in under any name; "admin" has its own password.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ["BERTH_USER_PASSWORD"]
c.SharedPasswordAuthenticator.admin_password = os.environ["BERTH_ADMIN_PASSWORD"]
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True

# Sessions' working directories, one per hub user.
c.BerthLocalSpawner.work_dir_template = str(Path.cwd() / "users" / "{username}")
# Sessions never run as root; start-hub makes the unprivileged account "berth" when run as root.
c.BerthLocalSpawner.run_as = os.environ.get("BERTH_RUN_AS", "")
