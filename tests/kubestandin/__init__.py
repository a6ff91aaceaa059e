"""A loopback Kubernetes API stand-in for tests: no cluster runs here, so this small one does.

``python -m kubestandin --kubeconfig PATH`` serves core/v1 (pods, services, secrets, configmaps,
persistentvolumeclaims, events, namespaces) on a free 127.0.0.1 port, writes a kubeconfig that
points at it, and runs a test scheduler and kubelet (:mod:`.kubelet`) that start each pod's
command as a local process. :class:`StandIn` starts and stops it from a test.

What it is not: no authentication or RBAC enforcement (requests are counted by verb and resource
instead, at ``GET /_standin/requests``), no apps/v1 or other API groups, no server-side apply, no
container images (commands run from the test's PATH), no restarts of exited containers, and
readiness is probed until the first success only.
"""

from .process import StandIn

__all__ = ["StandIn"]
