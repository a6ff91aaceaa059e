"""A spawner whose servers are "running" without any process, for measuring the hub's API.

The benchmark writes users, servers and their activity straight into the hub's database before
the hub starts; on start the hub polls each server (``poll`` says it is running) and routes it.
Nothing ever connects to these servers: a pass of a culler only talks to the hub's REST API, and a
stop only asks the spawner to stop (a no-op here) and removes the proxy route.
"""

from jupyterhub.spawner import Spawner


class NoProcessSpawner(Spawner):
    async def start(self):
        return ("127.0.0.1", 9)  # never started during the benchmark

    async def stop(self, now=False):
        return None

    async def poll(self):
        return None
