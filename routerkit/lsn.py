"""PostgreSQL WAL positions ("16/B374D848") as integers, so they compare and subtract."""

from __future__ import annotations

MAX_LSN = (1 << 64) - 1


def parse_lsn(text: str) -> int:
    """Return the integer position of a pg_lsn text such as ``"16/B374D848"``."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not a WAL position: {text!r}")
    value = (int(high, 16) << 32) | int(low, 16)
    if not 0 <= value <= MAX_LSN or len(low) > 8:
        raise ValueError(f"not a WAL position: {text!r}")
    return value


def format_lsn(value: int) -> str:
    """Return the pg_lsn text of an integer position."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
