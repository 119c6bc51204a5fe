"""The one broker-URL parser (wire/brokerurl.py) that ground, sim, hil and flash share."""

from __future__ import annotations

import pytest

from wire.brokerurl import BrokerUrl, BrokerUrlError


@pytest.mark.parametrize(("url", "want"), [
    ("127.0.0.1:1900", ("127.0.0.1", 1900, None, None, False)),
    ("mqtt://base.local", ("base.local", 1883, None, None, False)),
    ("tcp://h:2000", ("h", 2000, None, None, False)),
    ("mqtts://h", ("h", 8883, None, None, True)),
    ("mqtt://ground:p%40ss%3Aw%2Fd@h:1", ("h", 1, "ground", "p@ss:w/d", False)),
    ("mqtt://only-user@h", ("h", 1883, "only-user", None, False)),
])
def test_parse(url: str, want: tuple[object, ...]) -> None:
    b = BrokerUrl.parse(url)
    assert (b.host, b.port, b.username, b.password, b.tls) == want


def test_str_and_errors_never_show_the_password() -> None:
    b = BrokerUrl.parse("mqtts://ground:s3cret@h:9")
    assert str(b) == "mqtts://h:9"
    with pytest.raises(BrokerUrlError) as e:
        BrokerUrl.parse("http://ground:s3cret@h")
    assert "s3cret" not in str(e.value) and "mqtt://" in str(e.value)


@pytest.mark.parametrize(("url", "kw", "match"), [
    ("mqtt://h:99999", {}, "port"),
    ("mqtt://h:abc", {}, "port"),
    ("mqtts://h", {"schemes": ("mqtt",)}, "must start with mqtt://$"),
    ("mqtt://:1883", {"need_host": True}, "no host"),
])
def test_refused(url: str, kw: dict[str, object], match: str) -> None:
    with pytest.raises(BrokerUrlError, match=match):
        BrokerUrl.parse(url, **kw)  # type: ignore[arg-type]
