"""The Kubernetes backend (``berth-kubernetes``): sessions as pods through KubeSpawner.

:mod:`.names` (DNS-safe, collision-free names), :mod:`.builders` (launch spec to KubeSpawner
settings), :mod:`.profile_list` (the catalog as z2jh ``profile_list``), :mod:`.events` (Kubernetes
events as sentences) and :mod:`.spawner` (the spawner itself).
"""

from .spawner import BerthKubeSpawner

__all__ = ["BerthKubeSpawner"]
