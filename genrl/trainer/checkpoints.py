"""Atomic, verifiable ``accelerator.save_state`` checkpoints, and the choice of the one to resume.

A checkpoint is written into a hidden temporary folder, gets a manifest (every file's size and
sha256) as its last file, and is renamed into place; so a folder named ``checkpoint-<epoch>`` is
complete, and a file damaged later (a full disk, a copy cut short) is caught before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from genrl.config import ConfigError
from genrl.utils.files import atomic_write_path, follow_umask, restore_interrupted_swap, swap_into_place

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
MANIFEST = "manifest.json"
TRAINER_STATE_FILE = "trainer_state.pt"  # the trainer's own state, in every genrl checkpoint
_CHUNK = 1 << 20


def checkpoint_dir(root: str | Path, epoch: int) -> Path:
    """Where the checkpoint taken after ``epoch`` completed epochs lives."""
    return Path(root) / f"checkpoint-{epoch:06d}"


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch in a checkpoint folder's name (None for another name)."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary directories are ignored).

    A checkpoint that a crash left only as its previous version (``.old-checkpoint-<epoch>``, while
    an epoch was saved again) is renamed back first (:func:`restore_interrupted_swap`).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    for old in root.glob(".old-checkpoint-*"):
        if checkpoint_epoch(old.name.removeprefix(".old-")) is not None:
            restore_interrupted_swap(root / old.name.removeprefix(".old-"))
    found = [(epoch, p) for p in root.iterdir() if p.is_dir() and (epoch := checkpoint_epoch(p)) is not None]
    return [p for _, p in sorted(found)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Record the size and sha256 of every file under ``folder`` in ``folder/manifest.json``."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    with atomic_write_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True), encoding="utf-8")
    return folder / MANIFEST


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why checkpoint ``folder`` cannot be loaded, naming the file; None when every file matches its manifest.

    A checkpoint without a manifest (written by a genrl before manifests) cannot be checked and
    also returns None; :func:`has_manifest` tells it apart.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if not has_manifest(folder):
        return None
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{folder / MANIFEST} is unreadable ({err})"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{path} has {size} bytes where the manifest records {expected['size']} (truncated or replaced)"
        if _sha256(path) != expected["sha256"]:
            return f"{path} does not match the sha256 in its manifest (damaged)"
    return None


def has_manifest(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def save_atomically(accelerator, root: str | Path, epoch: int, keep: int, **save_kwargs) -> Path:
    """``accelerator.save_state`` into a temporary directory, renamed into place once complete.

    Every process must call this (accelerate saves per-process RNG states). The manifest is written
    last, by the main process, once every process has written its files. Once the new one is in
    place, checkpoints older than it are removed beyond the newest ``keep`` (this one included);
    newer ones (left by a run resumed from before them) are never counted or removed. ``save_kwargs`` go to
    ``save_state`` (DeepSpeed's ``save_checkpoint`` arguments).
    """
    root = Path(root)
    final = checkpoint_dir(root, epoch)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), **save_kwargs)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        follow_umask(tmp)  # safetensors writes 0600 files
        write_manifest(tmp)
        swap_into_place(tmp, final)  # re-saving an epoch after a resume replaces it, never leaving neither
        older = [p for p in list_checkpoints(root) if checkpoint_epoch(p) < epoch]
        for stale in older[:max(0, len(older) - (keep - 1))] if keep > 0 else []:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    return final


def choose_checkpoint(resume: str, run_dir: str | Path) -> tuple[Path, list[str]]:
    """The checkpoint that ``resume`` ("latest" or a checkpoint folder) names for the run in ``run_dir``,
    verified, and the notes to log about it; a :class:`ConfigError` when there is none to trust.

    "latest" takes the newest intact checkpoint of ``run_dir/checkpoints``, skipping damaged ones
    (each named in a note); an explicit folder that is damaged fails, naming the file.
    """
    run_dir = Path(run_dir)
    if resume != "latest":
        path = Path(resume).expanduser()
        if not path.is_dir():
            raise ConfigError(f"resume={resume}: checkpoint directory not found")
        if checkpoint_epoch(path) is None and not (path / TRAINER_STATE_FILE).is_file():
            raise ConfigError(_not_a_checkpoint(resume, path))
        problem = checkpoint_problem(path)
        if problem:
            raise ConfigError(f"resume={resume}: cannot resume, {problem}")
        return path, _unverified_note(path)
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        where = "does not exist" if not run_dir.exists() else "has no checkpoint (checkpoints/checkpoint-*)"
        raise ConfigError(f"--resume: {run_dir} {where}, so there is nothing to resume; "
                          "start the run without --resume")
    notes = []
    for path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            if notes:
                notes.append(f"resuming from the newest intact checkpoint, {path}")
            return path, notes + _unverified_note(path)
        notes.append(f"skipping checkpoint {path.name}: {problem}")
    raise ConfigError(f"--resume: no checkpoint of {run_dir} is intact ({'; '.join(notes)})")


def _not_a_checkpoint(resume: str, path: Path) -> str:
    """Why ``path`` (neither named ``checkpoint-<epoch>`` nor holding the trainer's state) is refused."""
    if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        return (f"resume={resume}: {path} is a run folder, not a checkpoint; did you mean "
                f"`log.output_dir={resume} --resume` (its newest checkpoint)?")
    return (f"resume={resume}: {path} is not a genrl checkpoint (neither named checkpoint-<epoch> nor holding "
            f"{TRAINER_STATE_FILE})")


def _unverified_note(path: Path) -> list[str]:
    if has_manifest(path):
        return []
    note = f"checkpoint {path} has no {MANIFEST} (written by an older genrl), so its files cannot be verified"
    return [note]
