"""Hub services: berth-culler, which ends idle and expired sessions and serves the extend API."""

from .registration import (
    CULLER_SCOPES,
    SERVICE_NAME,
    culler_config,
    register_culler,
    user_access_scope,
)

__all__ = ["CULLER_SCOPES", "SERVICE_NAME", "culler_config", "register_culler", "user_access_scope"]
