"""Fixtures for the firmware tests (defined in firmware_helpers.py)."""

from firmware_helpers import firmware_image, ground, make_node  # noqa: F401
