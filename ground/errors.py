"""Every error the ground segment raises on purpose, under one root.

    GroundError                 catch this to handle any of them
    ├── ArchiveError            the archive cannot be opened or used (also a RuntimeError)
    ├── AlarmError              no such alarm, or the action does not apply to its state (also a KeyError)
    ├── CommandError            a telecommand refused: unknown node/command, bad arguments,
    │   │                       hazardous without confirmation, bad window (also a ValueError)
    │   └── SelfApproval        a commander approving their own command (ground.ops.commander)
    ├── AuthError               ground.auth: accounts, credentials, secrets files
    │   ├── InsecureFile        a secrets/credentials file others can read, or not a regular file
    │   └── AccountError        a refused account change (also a ValueError)
    ├── SchemaError             a request field outside its schema, answered 400
    │                           (ground.api.schemas; also a ValueError)
    └── ApiError                the ground's client interface refused a request; ``status``,
        │                       ``message`` (also a RuntimeError)
        └── GroundUnavailable   the interface could not be reached (``status`` 0)

The builtin second bases keep older ``except ValueError``/``KeyError`` handlers working.
Bad *input data* (packets, payloads, status messages) never raises: it is counted and
reported (docs/ground-data.md).  Errors of the wire contract (``wire.inventory.InventoryError``,
``wire.dictionary.DictionaryError``, ``wire.brokerurl.BrokerUrlError``) are the wire's own.
"""

from __future__ import annotations


class GroundError(Exception):
    """Root of the ground segment's errors."""


class ArchiveError(GroundError, RuntimeError):
    """The archive cannot be opened or used; the message names the URL and the cause."""


class AlarmError(GroundError, KeyError):
    """No such alarm, or the operation does not apply to its state."""


class CommandError(GroundError, ValueError):
    """A command was refused before queueing (unknown node/command, bad args, no confirm)."""


class ApiError(GroundError, RuntimeError):
    """The ground refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class GroundUnavailable(ApiError):
    """The ground's interface could not be reached."""


__all__ = ["AlarmError", "ApiError", "ArchiveError", "CommandError", "GroundError", "GroundUnavailable"]
