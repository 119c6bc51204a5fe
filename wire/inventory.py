"""The base inventory: which nodes a site has, their broker credentials and telecommand keys.

A TOML file shared by the ground (signing commands, broker ACLs), the simulator (which
nodes to start) and the flashing tool (what to write into a node's config)::

    site = "shackleton"
    [[node]]
    id = "n01"
    board = "esp32"              # esp32 | rp2 | sim
    key = "<64 hex chars>"       # HMAC-SHA256 key for telecommands
    password = "<broker password>"
    hk_period_s = 1              # expected housekeeping period (staleness)

Keys and passwords are secrets: the file is written with mode 0600.

Broker accounts: every node has its own; the ground has ``ground_user`` (its main ingest
connection) plus one account per other ground-side connection, ``<ground_user>-<name>``
for each name in ``ground_clients`` (the command link, further ingest workers, the
simulator's observer, the flasher's monitor...).  The broker ties each client id to its
account (``use_username_as_clientid``), so every connection that may be up at the same
time needs an account of its own.  Their passwords are derived from ``ground_password``
(HMAC-SHA256), so only that one secret is stored.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

NODE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
SITE_ID = NODE_ID
BOARDS = ("esp32", "rp2", "sim")
MAX_INVENTORY_BYTES = 4 * 1024 * 1024  # ~20,000 nodes; anything bigger is not an inventory
MAX_HK_PERIOD_S = 30 * 86400.0
# ground-side broker connections besides the main ingest ("": ground_user itself):
# the command link, up to three more ground instances (ingest + command link each, e.g.
# shared-subscription workers), the simulator's observer, the flasher's and HIL monitors
DEFAULT_GROUND_CLIENTS = ("cmd", "2", "2-cmd", "3", "3-cmd", "4", "4-cmd", "sim", "monitor", "hil")


class InventoryError(ValueError):
    """The inventory is malformed; the message names the node and the field."""


@dataclass
class Node:
    id: str
    key: bytes
    password: str
    board: str = "sim"
    hk_period_s: float = 1.0

    def __post_init__(self) -> None:
        if not NODE_ID.match(self.id):
            raise InventoryError(f"node id {self.id!r}: use 1-32 of a-z 0-9 _ - (starting with a letter or digit)")
        if self.board not in BOARDS:
            raise InventoryError(f"node {self.id}: board {self.board!r} is not one of {BOARDS}")
        if len(self.key) < 16:
            raise InventoryError(f"node {self.id}: key must be at least 16 bytes")
        if not (isinstance(self.hk_period_s, (int, float)) and 0 < self.hk_period_s <= MAX_HK_PERIOD_S):
            # NaN, 0 or negative would make liveness call the node stale at once, or never
            raise InventoryError(f"node {self.id}: hk_period_s {self.hk_period_s!r} must be in (0, {MAX_HK_PERIOD_S}]")


@dataclass
class Inventory:
    site: str
    nodes: list[Node] = field(default_factory=list)
    ground_user: str = "ground"
    ground_password: str = ""
    ground_clients: list[str] = field(default_factory=lambda: list(DEFAULT_GROUND_CLIENTS))

    def __post_init__(self) -> None:
        if not SITE_ID.match(self.site):
            raise InventoryError(f"site {self.site!r}: use 1-32 of a-z 0-9 _ -")
        ids = [n.id for n in self.nodes]
        for c in self.ground_clients:
            if not NODE_ID.match(c) or len(self.ground_user) + 1 + len(c) > 64:
                raise InventoryError(f"ground client {c!r}: use a-z 0-9 _ - (the account is {self.ground_user}-{c})")
            if f"{self.ground_user}-{c}" in ids:
                raise InventoryError(f"node id {self.ground_user}-{c} is reserved for a ground account")
        dup = {i for i, k in collections.Counter(ids).items() if k > 1}
        if dup:
            raise InventoryError(f"node ids appear twice: {sorted(dup)}")
        if self.ground_user in ids:
            raise InventoryError(f"node id {self.ground_user!r} is reserved for the ground account")
        # a shared key would let one node's TC (or its stolen key) command the other
        by_key: dict[bytes, str] = {}
        for n in self.nodes:
            if n.key in by_key:
                raise InventoryError(f"nodes {by_key[n.key]} and {n.id} have the same telecommand key: give each its own")
            by_key[n.key] = n.id

    def ground_account(self, client: str = "") -> tuple[str, str]:
        """(username, password) of a ground-side broker connection ("" = the main ingest)."""
        if not client:
            return self.ground_user, self.ground_password
        if client not in self.ground_clients:
            raise InventoryError(f"no ground client {client!r} in the inventory of site {self.site} (known: "
                                 f"{', '.join(self.ground_clients)}); add it to ground_clients and regenerate "
                                 "the broker config (lunabase broker-config)")
        user = f"{self.ground_user}-{client}"
        if not self.ground_password:
            return user, ""
        mac = hmac.new(self.ground_password.encode(), b"lunabase broker account " + user.encode(), hashlib.sha256)
        return user, base64.urlsafe_b64encode(mac.digest()[:18]).decode()

    def ground_accounts(self) -> list[tuple[str, str]]:
        """Every ground-side broker account: the main one, then one per ground client."""
        return [self.ground_account("")] + [self.ground_account(c) for c in self.ground_clients]

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} at site {self.site} (known: {', '.join(n.id for n in self.nodes)})")

    @classmethod
    def generate(cls, site: str, node_ids: list[str], board: str = "sim", hk_period_s: float = 1.0) -> Inventory:
        """A new inventory with fresh random keys and passwords."""
        return cls(
            site=site,
            nodes=[Node(i, secrets.token_bytes(32), secrets.token_urlsafe(18), board, hk_period_s) for i in node_ids],
            ground_password=secrets.token_urlsafe(18),
        )

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_INVENTORY_BYTES:
                raise InventoryError(f"{path}: larger than {MAX_INVENTORY_BYTES} bytes: not an inventory")
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InventoryError(f"{path}: no such inventory file") from None
        except tomllib.TOMLDecodeError as e:
            raise InventoryError(f"{path}: {e}") from None
        try:
            nodes = [
                Node(
                    id=n["id"],
                    key=bytes.fromhex(n["key"]),
                    password=n["password"],
                    board=n.get("board", "sim"),
                    hk_period_s=float(n.get("hk_period_s", 1.0)),
                )
                for n in raw.get("node", [])
            ]
            return cls(
                site=raw["site"],
                nodes=nodes,
                ground_user=raw.get("ground_user", "ground"),
                ground_password=raw.get("ground_password", ""),
                ground_clients=list(raw.get("ground_clients", DEFAULT_GROUND_CLIENTS)),
            )
        except KeyError as e:
            raise InventoryError(f"{path}: missing field {e}") from None
        except (ValueError, TypeError, AttributeError) as e:  # a field of the wrong type: say which file
            raise InventoryError(f"{path}: {e}") from None

    def dumps(self) -> str:
        out = [
            "# lunabase base inventory (secrets: keep this file private)",
            f'site = "{self.site}"',
            f'ground_user = "{self.ground_user}"',
            f'ground_password = "{self.ground_password}"',
            "# other ground-side broker connections: account <ground_user>-<name> each",
            "ground_clients = [" + ", ".join(f'"{c}"' for c in self.ground_clients) + "]",
        ]
        for n in self.nodes:
            out += [
                "",
                "[[node]]",
                f'id = "{n.id}"',
                f'board = "{n.board}"',
                f'key = "{n.key.hex()}"',
                f'password = "{n.password}"',
                f"hk_period_s = {n.hk_period_s}",
            ]
        return "\n".join(out) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT: tighten it
        with os.fdopen(fd, "w") as f:
            f.write(self.dumps())
        return path
