"""Atomic ``accelerator.save_state`` checkpoints: write to a hidden temporary directory, then rename."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(root: str | Path, epoch: int) -> Path:
    """Where the checkpoint taken after ``epoch`` completed epochs lives."""
    return Path(root) / f"checkpoint-{epoch:06d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary directories are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, root: str | Path) -> Path | None:
    """``"latest"`` -> the newest checkpoint under ``root`` (None if there is none); else the given directory."""
    if resume == "latest":
        found = list_checkpoints(root)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"resume: checkpoint directory not found: {path}")
    return path


def save_atomically(accelerator, root: str | Path, epoch: int, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary directory, renamed into place once complete.

    Every process must call this (accelerate saves per-process RNG states). Older checkpoints
    beyond the newest ``keep`` are removed only after the new one is in place.
    """
    root = Path(root)
    final = checkpoint_dir(root, epoch)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # re-saving an epoch after a resume: swap, never leave neither in place
            old = root / f".old-{final.name}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        for stale in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    return final
