"""Fixtures for the firmware tests (defined in firmware_helpers.py)."""

from firmware_helpers import ground, make_node  # noqa: F401
