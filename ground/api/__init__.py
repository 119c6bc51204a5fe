"""The ground's client interface: HTTP JSON + WebSocket (docs/ground-api.md).

    ops = Operations(inventory, OpsStore("ops.db"), publish=...)
    server = await ApiServer(ops, port=0).start()      # server.url
"""

from ground.api.hub import Hub
from ground.api.operations import Operations
from ground.api.server import ApiServer

__all__ = ["ApiServer", "Hub", "Operations"]
