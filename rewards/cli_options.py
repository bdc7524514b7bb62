"""``key=value`` options from a command line, shared by the reward server and the scripts (imports nothing heavy)."""

from __future__ import annotations

import json
from collections.abc import Sequence


def parse_options(pairs: Sequence[str], flag: str = "--option") -> dict:
    """``--option key=value`` pairs as keyword options (values parsed as JSON when they are JSON)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
