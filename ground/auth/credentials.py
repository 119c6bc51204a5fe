"""Where a client finds its credential for a ground: arguments, environment, file, prompt.

    creds = load_credentials("http://127.0.0.1:8700", prompt=True)
    GroundClient(url, credentials=creds)

Order (the first that gives something wins):

1. explicit ``token=`` (an API key or access token) or ``user=`` + ``password=``;
2. ``LUNABASE_TOKEN``, else ``LUNABASE_USER`` + ``LUNABASE_PASSWORD`` (CI);
3. the credentials file ``~/.config/lunabase/credentials`` (``LUNABASE_CREDENTIALS``
   overrides the path): INI sections named by the ground's URL, then ``[default]``,
   with ``token = lbk_...`` or ``user =`` + ``password =``.  It must be 0600
   (``InsecureFile`` otherwise) and ``save_credentials`` writes it so;
4. with ``prompt`` and a terminal: the user name (default: ``user=`` or the login name)
   and the password, read without echo.
"""

from __future__ import annotations

import configparser
import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ground.auth.accounts import check_private, write_private


def credentials_path() -> Path:
    return Path(os.environ.get("LUNABASE_CREDENTIALS", "~/.config/lunabase/credentials")).expanduser()


@dataclass
class Credentials:
    """What a client logs in with; ``source`` says where it came from (never the secret)."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Credentials(user={self.user!r}, token={'***' if self.token else None}, source={self.source!r})"


def _section(cp: configparser.ConfigParser, url: str) -> configparser.SectionProxy | None:
    u = url.rstrip("/")
    for name in (u, u + "/", "default"):
        if cp.has_section(name):
            return cp[name]
    return None


def load_credentials(url: str, *, user: str | None = None, password: str | None = None, token: str | None = None,
                     prompt: bool = False, path: Path | None = None) -> Credentials:
    """The credential for the ground at ``url`` (may be empty: ``bool(creds)`` is False)."""
    if token:
        return Credentials(user, None, token, "argument")
    if user and password:
        return Credentials(user, password, None, "argument")
    env = os.environ
    if env.get("LUNABASE_TOKEN"):
        return Credentials(user, None, env["LUNABASE_TOKEN"], "LUNABASE_TOKEN")
    if env.get("LUNABASE_USER") and env.get("LUNABASE_PASSWORD") and (user is None or user == env["LUNABASE_USER"]):
        return Credentials(env["LUNABASE_USER"], env["LUNABASE_PASSWORD"], None, "LUNABASE_USER/LUNABASE_PASSWORD")
    p = path or credentials_path()
    if p.exists():
        check_private(p)
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(p, encoding="utf-8")
        sec = _section(cp, url)
        if sec is not None and (user is None or sec.get("user") in (None, user)):
            if sec.get("token"):
                return Credentials(sec.get("user") or user, None, sec["token"], str(p))
            if sec.get("user") and sec.get("password"):
                return Credentials(sec["user"], sec["password"], None, str(p))
    if prompt and sys.stdin.isatty():
        name = user or input(f"lunabase user for {url} [{getpass.getuser()}]: ").strip() or getpass.getuser()
        return Credentials(name, getpass.getpass(f"password for {name}: "), None, "prompt")
    return Credentials(user, password, None, "")


def save_credentials(url: str, *, user: str | None = None, token: str | None = None,
                     password: str | None = None, path: Path | None = None) -> Path:
    """Store a credential for ``url`` in the credentials file (0600, other sections kept)."""
    p = path or credentials_path()
    cp = configparser.ConfigParser(interpolation=None)
    if p.exists():
        check_private(p)
        cp.read(p, encoding="utf-8")
    name = url.rstrip("/")
    cp[name] = {k: v for k, v in (("user", user), ("token", token), ("password", password)) if v}
    import io

    buf = io.StringIO()
    cp.write(buf)
    write_private(p, buf.getvalue())
    return p
