"""A run's life in its folder: one run per ``log.output_dir``, a resume that continues exactly or
says why not, and a stop on SIGINT / SIGTERM that saves first.

:func:`plan_run` only reads the folder (apart from putting back a checkpoint that a crash left as
``.old-checkpoint-<epoch>``); the trainer acts on its :class:`RunPlan` once its set-up has
succeeded, so a run that fails to start changes nothing a user had.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import torch

from genrl.config import ConfigError, ExperimentConfig, resume_changes
from genrl.utils.files import LOCK_FILE

from .checkpoints import TRAINER_STATE_FILE, checkpoint_epoch, choose_checkpoint, list_checkpoints

logger = logging.getLogger(__name__)

#: What a run writes at the top of its folder; ``log.overwrite=true`` deletes these and nothing else.
RUN_RECORDS = frozenset({"config.yaml", "metrics.jsonl", "reward_curve.png", "checkpoints", "final", "grids", "logs"})


@dataclass
class RunPlan:
    """What a run does with its folder, decided before anything is written."""

    resume_from: Path | None = None  # the verified checkpoint to load
    clear: list[Path] = field(default_factory=list)  # the previous run's records, deleted first (log.overwrite)
    #: damaged checkpoints newer than the resume point, renamed ``.damaged-<name>`` first, so that no
    #: later save or resume counts them
    set_aside: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what to tell the user (skipped checkpoints, deletions)


def _is_record(name: str) -> bool:
    # ".metrics.jsonl.x1y2.jsonl" and the like: an atomic write that a crash interrupted
    return name in RUN_RECORDS or any(name.startswith(f".{record}.") for record in RUN_RECORDS)


def _names(paths: list[Path], limit: int = 4) -> str:
    names = sorted(p.name for p in paths)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plan_run(output_dir: str | Path, resume: str | None, overwrite: bool,
             config: ExperimentConfig | None = None, num_processes: int = 1) -> RunPlan:
    """Decide how a run uses ``output_dir``; a :class:`ConfigError` (one line naming the folder and the
    choices) when it would mix with, or silently replace, a run already there.

    With ``config``, a resumed run must also be the run it continues: its settings (but those of
    :data:`~genrl.config.RESUME_FREE_KEYS`) must match the ``config.yaml`` of the checkpoint's run, except
    that on another number of processes ``sample.batch_size`` (per process) changes so that each sampling
    iteration keeps its images (``num_processes`` x ``sample.batch_size``; see :func:`_check_world_size`).
    """
    output_dir = Path(output_dir)
    entries = [p for p in output_dir.iterdir() if p.name != LOCK_FILE] if output_dir.is_dir() else []
    records = [p for p in entries if _is_record(p.name)]
    if resume and overwrite:
        raise ConfigError(f"resume={resume} and log.overwrite=true contradict each other: continue the run in "
                          f"{output_dir} with --resume, or start it over with --overwrite")
    if resume:
        plan = _plan_resume(output_dir, resume, records)
        if config is not None:
            plan.notes += _check_same_run(plan.resume_from, config, num_processes)
        return plan
    if not entries:
        return RunPlan()
    if not overwrite:
        if records:
            raise ConfigError(f"log.output_dir={output_dir} already holds a run ({_names(records)}); continue it "
                              "with --resume, write to a new log.output_dir, or start it over with --overwrite "
                              "(log.overwrite=true), which deletes its records first")
        raise ConfigError(f"log.output_dir={output_dir} is not empty ({_names(entries)}); choose a new or empty "
                          "log.output_dir")
    foreign = [p for p in entries if not _is_record(p.name)]
    if foreign:
        raise ConfigError(f"log.overwrite=true deletes only a run's records, but log.output_dir={output_dir} also "
                          f"holds {_names(foreign)}, which genrl did not write; move them or choose another "
                          "log.output_dir")
    note = f"log.overwrite=true: deleting the previous run's {_names(records, 10)} in {output_dir}"
    return RunPlan(clear=records, notes=[note])


def _plan_resume(output_dir: Path, resume: str, records: list[Path]) -> RunPlan:
    path, notes = choose_checkpoint(resume, output_dir)
    if resume == "latest":  # the checkpoints after it were skipped as damaged
        damaged = [p for p in list_checkpoints(path.parent) if checkpoint_epoch(p) > checkpoint_epoch(path)]
        return RunPlan(resume_from=path, set_aside=damaged, notes=notes)
    own = output_dir / "checkpoints"
    if path.resolve().parent != own.resolve():
        if records:  # a checkpoint of another run continued here would mix two runs' records
            raise ConfigError(f"resume={resume} is a checkpoint of another run, and log.output_dir={output_dir} "
                              f"already holds a run ({_names(records)}); continue it in a new log.output_dir")
        return RunPlan(resume_from=path, notes=notes)
    newer = [p for p in list_checkpoints(own) if checkpoint_epoch(p) > checkpoint_epoch(path)]
    if newer:
        raise ConfigError(f"resume={resume} is older than {newer[-1].name} of the same run, and continuing it there "
                          "would discard the later epochs; resume the newest (--resume), or continue from "
                          f"{path.name} in a new log.output_dir")
    return RunPlan(resume_from=path, notes=notes)


def _check_same_run(checkpoint: Path, config: ExperimentConfig, num_processes: int = 1) -> list[str]:
    """Refuse a resume whose config differs from the checkpoint's run's ``config.yaml``; the notes to log."""
    checked, notes = _check_world_size(checkpoint, config, num_processes)
    saved = checkpoint.parent.parent / "config.yaml" if checkpoint.parent.name == "checkpoints" else None
    if saved is None or not saved.is_file():
        return [f"{checkpoint} has no config.yaml of its run beside it, so the config cannot be compared with it",
                *notes]
    try:
        changes = resume_changes(saved.read_text(encoding="utf-8"), config)
    except (OSError, UnicodeDecodeError, ConfigError) as err:
        raise ConfigError(f"resume: cannot read {saved}: {err}") from None
    if checked:  # the per-process batch was checked against the checkpoint's own record
        changes = [c for c in changes if not c.startswith("sample.batch_size ")]
    if changes:
        raise ConfigError(f"resume: the config differs from the run's {saved} in {'; '.join(changes)}; a resumed "
                          "run continues that run, so set them back, or start a new run in a new log.output_dir "
                          "(only keys that say how it runs, such as epochs, time_budget_minutes and log.*, may "
                          "change: genrl.config.RESUME_FREE_KEYS)")
    return notes


def checkpoint_world(checkpoint: Path) -> tuple[int, int] | None:
    """(processes, per-process ``sample.batch_size``) that wrote ``checkpoint``; None when it does not say (a
    checkpoint that predates the record, or whose trainer state the resume itself will report as unreadable)."""
    try:
        state = torch.load(checkpoint / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)["train_state"]
        return int(state["num_processes"]), int(state["batch_size"])
    except Exception:  # noqa: BLE001 -- damaged bytes fail the unpickler in many ways (IndexError, EOFError, ...);
        return None  # the resume's own load of this file then names the damage


def _check_world_size(checkpoint: Path, config: ExperimentConfig, num_processes: int) -> tuple[bool, list[str]]:
    """A resume on another number of processes must keep each sampling iteration's images (processes x
    ``sample.batch_size``), so that the prompt sampler draws the same prompts and groups, and the optimizer
    steps average the same number of images. Returns whether the checkpoint records its processes and batch
    (then ``sample.batch_size`` was checked here) and the note to log; a :class:`ConfigError` when they do not fit."""
    written = checkpoint_world(checkpoint)
    if written is None:
        return False, []
    processes, batch = written
    per_process, leftover = divmod(processes * batch, num_processes)
    if processes == num_processes and config.sample.batch_size != batch:
        raise ConfigError(f"resume: the config differs from {checkpoint}'s run in sample.batch_size ({batch} -> "
                          f"{config.sample.batch_size}) on the same {processes} processes; a resumed run continues "
                          "that run, so set it back, or start a new run in a new log.output_dir")
    if processes == num_processes:
        return True, []
    if leftover or config.sample.batch_size != per_process:
        advice = (f"set sample.batch_size={per_process}" if not leftover else
                  f"use a number of processes that divides {processes * batch}")
        raise ConfigError(f"resume: {checkpoint} was written by {processes} processes x sample.batch_size={batch} "
                          f"= {processes * batch} images per sampling iteration; on {num_processes} processes "
                          f"{advice} so that the iterations keep their images")
    note = (f"resuming {processes} processes' checkpoint on {num_processes}: sample.batch_size {batch} -> "
            f"{per_process} keeps {processes * batch} images per sampling iteration (the same prompts; other noise, "
            "so not bit-identical)")
    return True, [note]


def set_aside_damaged(paths: list[Path]) -> None:
    """Rename damaged checkpoints to ``.damaged-<name>`` (kept for inspection; never listed again)."""
    for path in paths:
        target = path.with_name(f".damaged-{path.name}")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f".damaged-{path.name}.{n}")
        path.rename(target)
        logger.warning("moved the damaged checkpoint %s aside to %s", path, target.name)


def clear_run_records(paths: list[Path]) -> None:
    """Delete the records of an overwritten run (folders and files)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on a signal, after saving (or at once, on a second signal); ``exit_code`` is
    the shell's 128 + signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """While active, turns the first SIGINT or SIGTERM into a request (:attr:`requested`) that the loop
    honours at its next safe point and reports (:meth:`announce`); a second signal aborts at once with
    :class:`RunInterrupted`.

    A signal that repeats within ``repeat_window_s`` of the first is the same request: a terminal's
    Ctrl-C reaches every process of a launch, and torchrun (``accelerate launch --multi_gpu``) then
    forwards it to its workers again. Handlers can only be installed in the main thread; elsewhere
    this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, repeat_window_s: float = 1.0) -> None:
        self.repeat_window_s = repeat_window_s
        self.signum: int | None = None
        self._first_at = 0.0
        self._announced = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def announce(self) -> None:
        """Log the stop request, once; the loop calls this at every batch (the handler only records the
        request: logging there could re-enter a write to stderr that the signal interrupted)."""
        if self.signum is not None and not self._announced:
            self._announced = True
            logger.warning("%s: stopping once the current epoch is done and saved; send it again to abort at once",
                           self.name)

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif now - self._first_at >= self.repeat_window_s:
            raise RunInterrupted(f"{signal.Signals(signum).name} again: aborted at once; the newest "
                                 "checkpoint is the last one saved before", signum)
