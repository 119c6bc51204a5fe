"""The broker URL every part takes (``--broker``): ``mqtt://[user[:password]@]host[:port]``.

``mqtts://`` means TLS (default port 8883); a bare ``host:port`` means ``mqtt://``; ``tcp://``
is an alias of ``mqtt://``.  User and password are percent-decoded, so a password with
``@``, ``:`` or ``/`` is written ``p%40ss``.  ``str()`` never shows the credentials.

    >>> b = BrokerUrl.parse("mqtts://ground:p%40ss@base.local")
    >>> (b.host, b.port, b.username, b.password, b.tls)
    ('base.local', 8883, 'ground', 'p@ss', True)
    >>> str(b)
    'mqtts://base.local:8883'
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_PORT", "DEFAULT_TLS_PORT", "BrokerUrl", "BrokerUrlError"]

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


class BrokerUrlError(ValueError):
    """The broker URL cannot be used; the message quotes it (without its password) and says why."""


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker URL; ``username``/``password`` are None when the URL has none."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str, *, schemes: Container[str] = ("mqtt", "mqtts"), need_host: bool = False) -> BrokerUrl:
        """Parse ``url``; ``schemes`` are the ones the caller supports, ``need_host`` refuses a URL without one."""
        u = urlsplit(url if "://" in url else "mqtt://" + url)
        shown = _without_password(url)
        scheme = "mqtt" if u.scheme == "tcp" else u.scheme
        if scheme not in schemes:
            supported = " or ".join(f"{s}://" for s in ("mqtt", "mqtts") if s in schemes)
            raise BrokerUrlError(f"{shown}: the broker URL must start with {supported}")
        try:
            port = u.port
        except ValueError:
            raise BrokerUrlError(f"{shown}: the port is not a number in 0-65535") from None
        if need_host and not u.hostname:
            raise BrokerUrlError(f"{shown}: no host (use {scheme}://host:port)")
        tls = scheme == "mqtts"
        return cls(
            host=u.hostname or "127.0.0.1",
            port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _without_password(url: str) -> str:
    head, sep, rest = url.rpartition("@")
    if not sep:
        return url
    scheme, _, cred = head.rpartition("://")
    user = cred.split(":", 1)[0]
    return f"{scheme + '://' if scheme else ''}{user}:***@{rest}" if ":" in cred else url
