"""One JSON line per training-log record: printed, and appended to the run's log file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def emit_record(record: dict, path: str | Path | None) -> None:
    """Print ``record`` as one JSON line and append the line to ``path`` (when given)."""
    line = json.dumps(record)
    print(line, flush=True)
    if path is not None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def jsonl_logger(path: str | Path | None) -> Callable[[dict], None]:
    """A ``log(record)`` that prints the record as JSON and appends it to ``path`` (emptied first, when given)."""
    if path is not None:
        Path(path).write_text("")

    def log(record: dict) -> None:
        emit_record(record, path)
    return log
