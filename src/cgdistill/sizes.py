"""Memory sizes as users write them on the command line (``1.5G``, ``800M``): torch-free, so that
configs can check them while the CLI parses."""

from __future__ import annotations

import re

from cgdistill.errors import CgdistillError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """Bytes from ``1.5G``, ``800M``, ``2048K`` or a plain byte count (powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise CgdistillError(f"{flag} {text!r} is not a size; write it like 1.5G, 800M or 2048K.")
    scale = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * scale)
