"""Broker security generated from the base inventory: mosquitto config, passwords, ACLs, TLS.

    >>> from ground.broker import write_broker_config
    >>> files = write_broker_config(Inventory.load("base.toml"), "broker/", port=1883)
    >>> files.config        # broker/mosquitto.conf: run `mosquitto -c broker/mosquitto.conf`

Rules (see docs/ground-data.md):
  * node N of site S may publish only ``lunabase/S/N/tm`` and ``lunabase/S/N/status``
    (its last will included) and read only ``lunabase/S/N/cmd``;
  * the ground account reads ``lunabase/#`` and writes ``lunabase/+/+/cmd``;
  * no anonymous access; ``max_queued_messages 0`` (mosquitto's default of 1000 silently
    drops QoS 1 messages for a subscriber that falls behind);
  * ``max_packet_size`` (``MAX_PACKET_SIZE``, 257 KiB): nothing bigger than the ingest
    accepts gets through the broker.
"""

from __future__ import annotations

from ground.broker._config import (
    MAX_PACKET_SIZE,
    BrokerFiles,
    TlsFiles,
    acl_text,
    hash_password,
    make_self_signed,
    password_file_text,
    security_config,
    tls_listener,
    write_broker_config,
    write_password_file,
)

__all__ = [
    "MAX_PACKET_SIZE",
    "BrokerFiles",
    "TlsFiles",
    "acl_text",
    "hash_password",
    "make_self_signed",
    "password_file_text",
    "security_config",
    "tls_listener",
    "write_broker_config",
    "write_password_file",
]
