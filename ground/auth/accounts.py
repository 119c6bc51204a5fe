"""Accounts kept by the ground: a JSON secrets file (0600) of users, roles, password hashes and API keys.

    store = AccountStore.open("lunabase-users.json", create=True)
    store.add("alice", "correct horse", ["commander"], by="local:root")
    key = store.create_key("hil-bot", "CI runner", by="local:root")   # shown once
    store.authenticate_password("alice", "correct horse")             # Account | None

Passwords are ``hashlib.scrypt`` hashes with a random 16-byte salt (parameters stored with
each hash, so they can be raised later).  API keys are ``lbk_<id>_<secret>`` with 32 random
bytes of secret; only a SHA-256 of the secret is kept (a high-entropy secret needs no slow
hash) and a key is revoked by deleting it.  Every change appends ``{t, by, action, target}``
to the file's bounded ``audit`` list; the ground reports new entries in its event log.

The file is written atomically with mode 0600 on every save; ``open`` refuses a file any
group or other user can read or write (``InsecureFile`` names it and the fix).  A missing
or changed file is re-read when ``reload_if_changed`` sees a new mtime, so ``lunabase users``
edits (a revoked key, a removed account, new roles) apply to a running ground within a second.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ground.auth.roles import check_roles
from ground.errors import GroundError

NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1   # ~16 MiB, ~50 ms per check on a small machine
MIN_PASSWORD = 8
MAX_PASSWORD = 1024     # bounded input: scrypt of a megabyte is a denial of service
AUDIT_KEEP = 1000
KEY_PREFIX = "lbk_"


class AuthError(GroundError):
    """Root of ground.auth's errors (under ``ground.errors.GroundError``).

    AuthError
    ├── InsecureFile    a secrets/credentials file others can read (mode), or not a regular file
    └── AccountError    a refused account change (unknown/duplicate name, weak password, bad role)
    """


class InsecureFile(AuthError):
    """A secrets file is group/world readable or writable."""


class AccountError(AuthError, ValueError):
    """An account operation was refused."""


def check_private(path: Path) -> None:
    """InsecureFile unless ``path`` is a regular file only its owner can read and write."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise InsecureFile(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise InsecureFile(f"{path} is readable or writable by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
                           f"it holds secrets: chmod 600 {path}")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing tmp or a umask never widens it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``password``."""
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(h).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, h = stored.split("$")
        if kind != "scrypt":
            return False
        ni, ri, pi = int(n), int(r), int(p)
        got = hashlib.scrypt(password.encode()[:MAX_PASSWORD * 4], salt=base64.b64decode(salt), n=ni, r=ri, p=pi,
                             maxmem=128 * ri * ni * 2, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(h))


_dummy: list[str] = []


def _dummy_hash() -> str:
    """A hash to check against when the account does not exist, so a wrong name costs as
    long as a wrong password (no account enumeration by timing); made on first use."""
    if not _dummy:
        _dummy.append(hash_password(secrets.token_hex(8)))
    return _dummy[0]


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Account:
    """One person or service account (``password`` None: API keys only)."""

    name: str
    roles: list[str]
    password: str | None = None
    created: float = 0.0
    keys: list[dict[str, Any]] = field(default_factory=list)  # {id, hash, label, created}

    def public(self) -> dict[str, Any]:
        """What may be shown: never a hash."""
        return {"name": self.name, "roles": list(self.roles), "password": self.password is not None,
                "created": self.created,
                "keys": [{"id": k["id"], "label": k.get("label", ""), "created": k.get("created")} for k in self.keys]}


class AccountStore:
    """The ground's accounts (``path`` None: in memory, for tests)."""

    def __init__(self, path: str | Path | None = None, *, scrypt_n: int = SCRYPT_N) -> None:
        self.path = Path(path) if path is not None else None
        self.scrypt_n = scrypt_n
        self.users: dict[str, Account] = {}
        self.audit: list[dict[str, Any]] = []
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False) -> AccountStore:
        """Load the secrets file; ``create`` makes an empty one (0600) when it is missing.

        FileNotFoundError without ``create``; InsecureFile when others may read it.
        """
        s = cls(path)
        assert s.path is not None
        if not s.path.exists():
            if not create:
                raise FileNotFoundError(f"{s.path}: no accounts file (create the first admin: "
                                        f"lunabase users add NAME --role admin --file {s.path})")
            s.save()
        s.load()
        return s

    # -- file ---------------------------------------------------------------------------

    def load(self) -> None:
        assert self.path is not None
        check_private(self.path)
        with self._lock:
            st = self.path.stat()
            try:
                d = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise AuthError(f"{self.path}: not a lunabase accounts file ({e})") from None
            users = {}
            for name, u in (d.get("users") or {}).items():
                users[name] = Account(name, list(u.get("roles", [])), u.get("password"), float(u.get("created", 0)),
                                      list(u.get("keys", [])))
            self.users = users
            self.audit = list(d.get("audit") or [])
            self._mtime = st.st_mtime_ns

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            d = {"version": 1,
                 "users": {a.name: {"roles": a.roles, "password": a.password, "created": a.created, "keys": a.keys}
                           for a in self.users.values()},
                 "audit": self.audit[-AUDIT_KEEP:]}
            write_private(self.path, json.dumps(d, indent=1) + "\n")
            self._mtime = self.path.stat().st_mtime_ns

    def reload_if_changed(self, min_interval: float = 1.0) -> bool:
        """Re-read the file if another process changed it (checked at most every ``min_interval`` s).

        A file that became group/world readable is refused (InsecureFile) rather than trusted.
        """
        if self.path is None:
            return False
        now = time.monotonic()
        if now - self._checked < min_interval:
            return False
        self._checked = now
        try:
            m = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if m == self._mtime:
            return False
        self.load()
        return True

    def _record(self, by: str, action: str, target: str, **extra: Any) -> None:
        self.audit.append({"t": time.time(), "by": by, "action": action, "target": target, **extra})
        del self.audit[:-AUDIT_KEEP]

    # -- changes ------------------------------------------------------------------------

    def _check_password(self, password: str) -> None:
        if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
            raise AccountError(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")

    def add(self, name: str, password: str | None, roles: list[str], *, by: str) -> Account:
        """A new account (``password`` None: a service account that uses API keys)."""
        if not NAME_RE.match(name):
            raise AccountError(f"account name {name!r}: lower-case letters, digits, . _ -; up to 32, starting "
                               "with a letter")
        try:
            rs = check_roles(roles)
        except ValueError as e:
            raise AccountError(str(e)) from None
        if not rs:
            raise AccountError("an account needs at least one role")
        if password is not None:
            self._check_password(password)
        with self._lock:
            if name in self.users:
                raise AccountError(f"account {name!r} exists")
            a = Account(name, rs, hash_password(password, n=self.scrypt_n) if password is not None else None,
                        time.time())
            self.users[name] = a
            self._record(by, "add", name, roles=rs)
            self.save()
        return a

    def get(self, name: str) -> Account:
        a = self.users.get(name)
        if a is None:
            raise AccountError(f"no account {name!r}")
        return a

    def set_password(self, name: str, password: str | None, *, by: str) -> None:
        """New password (None: password login off); every API key is kept."""
        if password is not None:
            self._check_password(password)
        with self._lock:
            a = self.get(name)
            a.password = hash_password(password, n=self.scrypt_n) if password is not None else None
            self._record(by, "passwd", name)
            self.save()

    def set_roles(self, name: str, roles: list[str], *, by: str) -> None:
        try:
            rs = check_roles(roles)
        except ValueError as e:
            raise AccountError(str(e)) from None
        if not rs:
            raise AccountError("an account needs at least one role (remove it instead)")
        with self._lock:
            a = self.get(name)
            old, a.roles = a.roles, rs
            self._record(by, "roles", name, old=old, roles=rs)
            self.save()

    def remove(self, name: str, *, by: str) -> None:
        with self._lock:
            self.get(name)
            del self.users[name]
            self._record(by, "remove", name)
            self.save()

    def create_key(self, name: str, label: str = "", *, by: str) -> str:
        """Mint an API key for ``name``; the returned string is the only copy of the secret."""
        kid = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        with self._lock:
            a = self.get(name)
            a.keys.append({"id": kid, "hash": _key_hash(secret), "label": label[:100], "created": time.time()})
            self._record(by, "key_create", name, key=kid, label=label[:100])
            self.save()
        return f"{KEY_PREFIX}{kid}_{secret}"

    def revoke_key(self, name: str, key_id: str, *, by: str) -> None:
        with self._lock:
            a = self.get(name)
            keep = [k for k in a.keys if k["id"] != key_id]
            if len(keep) == len(a.keys):
                raise AccountError(f"{name} has no API key {key_id!r}")
            a.keys = keep
            self._record(by, "key_revoke", name, key=key_id)
            self.save()

    # -- checks -------------------------------------------------------------------------

    def authenticate_password(self, name: str, password: str) -> Account | None:
        """The account when ``password`` is right (constant work for unknown names)."""
        a = self.users.get(name)
        if len(password) > MAX_PASSWORD:
            return None
        if a is None or a.password is None:
            verify_password(password, _dummy_hash())
            return None
        return a if verify_password(password, a.password) else None

    def authenticate_key(self, key: str) -> tuple[Account, str] | None:
        """(account, key id) for a valid API key."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        kid, _, secret = key[len(KEY_PREFIX):].partition("_")
        h = _key_hash(secret)
        for a in list(self.users.values()):
            for k in a.keys:
                if k["id"] == kid and hmac.compare_digest(k["hash"], h):
                    return a, kid
        return None
