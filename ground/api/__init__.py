"""The ground's client interface: HTTP JSON + WebSocket (docs/ground-api.md).

    ops = Operations(inventory, OpsStore("ops.db"), publish=...)     # ground.ops
    server = await ApiServer(ops, port=0).start()      # server.url
"""

from ground.api.server import ApiServer

__all__ = ["ApiServer"]
