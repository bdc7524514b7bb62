"""The one training loop on accelerate: sample -> decode -> reward -> gather -> advantages -> update.

Algorithms (``genrl.algorithms``) decide what a rollout records, how rewards become advantages and
the loss of a batch, and own the epoch (:meth:`Algorithm.run_epoch`); the trainer composes the services
they use (:class:`ModelState`, :class:`RewardService`, :class:`RolloutService`, :class:`Updater`,
:class:`Evaluator`, :class:`CheckpointedState`) and owns the run: its folder, the epochs, evaluation
and logging, stop signals, checkpoints, resume and export.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed

from genrl.algorithms import KRepeatSampler, RolloutBatch, build_algorithm, family_weights
from genrl.config import ConfigError, ExperimentConfig, check_group_layout, load_prompt_set, to_yaml
from genrl.data import prompt_family
from genrl.grid import make_grid, save_image_atomically
from genrl.media_sheets import save_media_sheet
from genrl.utils.files import FolderLock, FolderLocked, atomic_write_path
from rewards import WeightedSum
from rewards.media import Media

from .checkpoints import save_atomically
from .deepspeed_zero import accelerator_kwargs, check_deepspeed_run, deepspeed_launch
from .evaluation import Evaluator
from .lifecycle import RunInterrupted, RunPlan, StopSignals, clear_run_records, plan_run, set_aside_damaged
from .metrics import MetricsLog, TrainingProgress, plot_reward_curve
from .model_state import ModelState
from .rollouts import RolloutService
from .run_state import CheckpointedState, TrainState
from .scoring import RewardService
from .sharding import resolve_sharding
from .update import Updater

logger = logging.getLogger(__name__)


class Trainer:
    """Runs an :class:`ExperimentConfig`; ``Trainer(cfg).train()`` is the whole job.

    A Trainer owns ``log.output_dir`` from its construction (a lock, released when :meth:`train`
    ends) and checks there, before any model loads, that the run neither mixes with nor silently
    replaces another one, and that the checkpoint it resumes is intact (:func:`plan_run`).

    Its services, one job each: ``models`` (:class:`ModelState`: pipeline, adapter, trainable denoiser,
    optimizer, EMA, reference), ``rewards`` (:class:`RewardService`), ``rollouts`` (:class:`RolloutService`),
    ``updater`` (:class:`Updater`), ``evaluator`` (:class:`Evaluator`) and ``checkpoints``
    (:class:`CheckpointedState`). Algorithms see it as a :class:`genrl.algorithms.TrainerContext`.
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.log.output_dir)
        created = _missing_folders(self.output_dir)  # removed again if the set-up fails
        self.algorithm = build_algorithm(cfg.train.algorithm, cfg)
        self.units_per_batch = self.algorithm.num_train_units()
        # before accelerate reads its launch settings: an FSDP launch is genrl's own FSDP2 (see resolve_sharding)
        self.sharding, sharding_note = resolve_sharding(cfg.model.sharding)
        self.deepspeed = deepspeed_launch()  # ZeRO-2 through accelerate (genrl/trainer/deepspeed_zero.py)
        if self.deepspeed:
            check_deepspeed_run(cfg, self.sharding, self.algorithm.many_forwards_per_backward,
                                accumulation=cfg.train.gradient_accumulation_steps * self.units_per_batch)
        self.accelerator = Accelerator(
            **accelerator_kwargs(self.deepspeed),
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps * self.units_per_batch,
            log_with=list(cfg.log.log_with) or None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")))
        self._lock = FolderLock(self.output_dir)
        if sharding_note and self.accelerator.is_main_process:  # a warning when the launch's FSDP is not used
            (logger.warning if self.sharding == "none" else logger.info)("%s", sharding_note)
        self._stop: StopSignals | None = None  # while train() runs
        try:
            self._plan = self._claim_output_dir()
            self._setup()
        except BaseException:
            self._lock.release()
            if self.accelerator.is_main_process:
                _remove_empty(created)
            raise

    # ----------------------------------------------------------------------------------- set-up
    def _claim_output_dir(self) -> RunPlan:
        """Lock ``log.output_dir`` and plan its use on the main process; every process gets the same
        plan or the same :class:`ConfigError` (a broadcast, so no process waits on one that failed)."""
        acc = self.accelerator
        plan, error = None, None
        if acc.is_main_process:
            try:
                if not self.output_dir.exists():  # refuse (say, --resume with nothing to resume) before the lock creates it
                    plan_run(self.output_dir, self.cfg.resume, self.cfg.log.overwrite, self.cfg, acc.num_processes)
                previous = self._lock.acquire()
                if previous:
                    logger.info("took over the lock of %s, left by %s, which is no longer running",
                                self.output_dir, previous)
                plan = plan_run(self.output_dir, self.cfg.resume, self.cfg.log.overwrite, self.cfg, acc.num_processes)
            except FolderLocked as err:
                error = ConfigError(f"log.output_dir={self.output_dir}: {err}; wait for that run to end, or "
                                    "choose another log.output_dir")
            except OSError as err:  # e.g. a folder that cannot be created
                error = ConfigError(f"log.output_dir={self.output_dir}: {err}")
            except ConfigError as err:
                error = err
        if acc.num_processes > 1:
            plan, message = broadcast_object_list([plan, None if error is None else str(error)], from_process=0)
            error = error or (ConfigError(message) if message else None)
        if error is not None:
            raise error
        return plan

    def _setup(self) -> None:
        """Seed, threads, prompts and the services: model, rewards, rollouts, updates, evaluation, checkpoints."""
        cfg, acc = self.cfg, self.accelerator
        set_seed(cfg.seed, device_specific=True)
        if acc.device.type == "cpu":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
            torch.set_num_threads(cfg.cpu_threads or max(1, cores // max(1, local)))
        self.state = TrainState(acc.num_processes, cfg.sample.batch_size)
        self.metrics_log = MetricsLog(self.output_dir / "metrics.jsonl")
        self._setup_data()
        self.models = ModelState(cfg, acc, self.algorithm, sharded=self.sharding == "fsdp")
        self.checkpoints = CheckpointedState(acc, self.models, {"sampler": self.sampler, "train_state": self.state})
        self.rewards = RewardService(cfg, acc)
        self.rewards.check(self.models.adapter, self.algorithm)
        self.rollouts = RolloutService(cfg, acc, self.models, self.algorithm, self.train_set, self.sampler,
                                       self.rewards, context=self, before_batch=self._notice_stop)
        self.updater = Updater(cfg, acc, self.models, self.algorithm, self.state, before_batch=self._notice_stop)
        self.evaluator = Evaluator(cfg, acc, self.models, self.rewards, self.rollouts, self.test_set,
                                   before_batch=self._notice_stop)
        self.algorithm.setup(self)

    def _setup_data(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        self.train_set = load_prompt_set("data.train_prompts", cfg.data.train_prompts)
        self.test_set = load_prompt_set("data.test_prompts", cfg.data.test_prompts)
        # a config loaded without a process count (load_config's default) was not checked against this launch
        check_group_layout(cfg.sample, acc.num_processes, len(self.train_set))
        weights = (family_weights([prompt_family(m) for m in self.train_set.metadata])
                   if cfg.data.balance == "family" else None)
        self.sampler = KRepeatSampler(len(self.train_set), cfg.sample.batch_size, cfg.sample.group_size,
                                      num_replicas=acc.num_processes, rank=acc.process_index, seed=cfg.seed,
                                      weights=weights)

    # ----------------------------------------------------------------------------------- the algorithms' context
    @property
    def adapter(self):
        """The model family's adapter (:class:`genrl.models.ModelAdapter`)."""
        return self.models.adapter

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The trainable denoiser without accelerate's wrappers."""
        return self.models.unwrapped

    @property
    def reward_fn(self) -> WeightedSum:
        """The training reward."""
        return self.rewards.reward_fn

    def sample_epoch(self, epoch: int) -> list[RolloutBatch]:
        """The epoch's rollouts, each batch scored as it is decoded (:class:`RolloutService`)."""
        return self.rollouts.sample_epoch(epoch)

    def score_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]:
        """Rewards gathered over processes and advantages set (:class:`RewardService`)."""
        return self.rewards.score_epoch(batches, self.algorithm)

    def optimize_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]:
        """The inner epochs of updates (:class:`Updater`)."""
        return self.updater.optimize_epoch(batches)

    def count_samples(self, n: int) -> None:
        """Count ``n`` samples this process generated outside :meth:`sample_epoch` (reward backpropagation's)."""
        self.rollouts.sampled += n

    def checkpoint_object(self, name: str, obj: Any) -> None:
        """Save ``obj.state_dict()`` with every checkpoint and restore it on resume (call before training)."""
        self.checkpoints.add(name, obj)

    # ----------------------------------------------------------------------------------- the loop
    def _start_run(self) -> None:
        """Act on the run's plan: delete an overwritten run's records, load the resume point, then (only
        then) write ``config.yaml``, drop the metrics the resumed run re-does, and open the trackers."""
        cfg, acc, plan = self.cfg, self.accelerator, self._plan
        if acc.is_main_process:
            for note in plan.notes:
                logger.warning("%s", note)
            clear_run_records(plan.clear)
            set_aside_damaged(plan.set_aside)
        acc.wait_for_everyone()
        self._resume()
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if plan.resume_from is not None:
                self.metrics_log.truncate_after(self.state.epoch)
            _write_text_atomically(self.output_dir / "config.yaml", to_yaml(cfg))
        # tensorboard drops the events of the epochs the resumed run re-does, as the JSONL log does
        init_kwargs = {"tensorboard": {"purge_step": self.state.epoch + 1}} if plan.resume_from is not None else {}
        acc.init_trackers("genrl", config=_flat_scalars(asdict(cfg)), init_kwargs=init_kwargs)

    def _resume(self) -> None:
        """Load the run's verified resume point, if it has one; a :class:`ConfigError` if it does not fit."""
        path = self._plan.resume_from
        if path is None:
            return
        self.checkpoints.resume(path)
        logger.info("resumed from %s at epoch %d", path, self.state.epoch)

    def _log(self, record: dict, grid: tuple[Media | None, list[str]] | None = None) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            self.metrics_log.append(record)
            if grid is not None and grid[0] is not None:
                media, captions = grid
                path = self.output_dir / "grids" / f"eval-epoch-{record['epoch']:06d}.png"
                if media.kind == "image":
                    title = (f"epoch {record['epoch']}: held-out prompts, deterministic sampler"
                             + (", EMA weights" if self.models.ema is not None else ""))
                    images = media.tensor.permute(0, 2, 3, 1).numpy()
                    save_image_atomically(make_grid(images, captions, columns=8, cell=128, caption_lines=5,
                                                    title=title), path)
                else:  # a GIF grid and frame strip of videos, or a folder of WAVs with an HTML index
                    save_media_sheet(media, captions, path, columns=8)
        acc.log({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def train(self) -> dict:
        """Run (or resume) the configured number of epochs; returns the last epoch's metrics.

        A first SIGINT or SIGTERM ends the run once the current epoch is done (its scheduled
        evaluation included), with a checkpoint, the metrics and the reward curve written, by raising
        :class:`RunInterrupted`; a second one aborts at once. The folder's lock is released either way.
        """
        try:
            with StopSignals() as self._stop:
                return self._train(self._stop)
        finally:
            self._stop = None
            self._lock.release()

    def _train(self, stop: StopSignals) -> dict:
        cfg, acc = self.cfg, self.accelerator
        self._start_run()
        if self.state.epoch == 0:
            metrics, images, captions = self.evaluator.evaluate()
            self._log({"epoch": 0, **metrics}, (images, captions))
        last: dict = {}
        shown: dict[str, str] = {}
        progress = TrainingProgress(epochs=cfg.epochs, budget_minutes=cfg.time_budget_minutes, epoch=self.state.epoch,
                                    train_seconds=self.state.train_seconds, disable=not acc.is_local_main_process)
        while self.state.epoch < cfg.epochs and not self.sampler.exhausted():  # (a resumed run that banning ended)
            record = self._train_epoch()
            epoch = self.state.epoch
            due = epoch == cfg.epochs or (cfg.log.eval_every and epoch % cfg.log.eval_every == 0)
            evaluation = self.evaluator.evaluate() if due else None
            # after the evaluation, so a signal during it stops this epoch, not the next
            signum, out_of_time, exhausted = self._agree_on_stopping(stop)
            if exhausted:
                logger.info("training ends after epoch %d: %d training prompt(s) left to draw, the others banned "
                            "as solved (nft.ban_std / nft.ban_mean), and an iteration needs %d", epoch,
                            self.sampler.drawable(), self.sampler.prompts_per_iteration)
            done = epoch == cfg.epochs or out_of_time or exhausted
            stopping = signum is not None and not done
            if done and evaluation is None:  # the time budget ended the run: its final evaluation
                evaluation = self.evaluator.evaluate()
            grid = None
            if evaluation is not None:
                metrics, images, captions = evaluation
                record.update(metrics)
                if done or (cfg.log.grid_every and epoch % cfg.log.grid_every == 0):
                    grid = (images, captions)
            self._log(record, grid)
            if done or stopping or (cfg.log.save_every and self.state.epoch % cfg.log.save_every == 0):
                saved = save_atomically(acc, self.output_dir / "checkpoints", self.state.epoch,
                                        cfg.log.keep_checkpoints, **self.checkpoints.save_kwargs)
            if "reward/mean" in record:  # an algorithm with its own epoch may not gather rewards
                shown.update({"reward": f"{record['reward/mean']:.3f}"})
            shown.update({f"eval_{k[5:]}": f"{v:.3f}" for k, v in record.items() if k.startswith("eval/")
                          and k.count("/") == 1})
            progress.advance(self.state.epoch, self.state.train_seconds, shown)
            last = record
            if stopping:
                progress.close()
                self._write_curve()
                acc.end_training()
                how = ("without --overwrite (log.overwrite=true) and with --resume" if cfg.log.overwrite
                       else "with --resume")
                raise RunInterrupted(f"stopped by {signal.Signals(signum).name} after epoch {self.state.epoch} of "
                                     f"{cfg.epochs}, saved in {saved}; to continue, run the same command {how}", signum)
            if done:
                break
        progress.finish()
        self._write_curve()
        self.export()
        acc.end_training()
        return last

    def _train_epoch(self) -> dict:
        """Sample, score and learn from one epoch; returns its record (evaluation not included)."""
        acc = self.accelerator
        epoch = self.state.epoch
        started = time.perf_counter()
        self.rollouts.start_epoch()
        record = {"epoch": epoch + 1, **self.algorithm.run_epoch(self, epoch)}  # the epoch belongs to the algorithm
        self.state.epoch = epoch + 1
        self.state.samples += acc.num_processes * self.rollouts.sampled
        self.state.train_seconds += time.perf_counter() - started
        record.update({"samples": self.state.samples, "time/train_s": round(self.state.train_seconds, 2)})
        return record

    def _notice_stop(self) -> None:
        """Report a stop signal that arrived since the last batch (the signal handler does not log)."""
        if self._stop is not None:
            self._stop.announce()

    def _agree_on_stopping(self, stop: StopSignals) -> tuple[int | None, bool, bool]:
        """The stop signal any process got (None: none did; the highest number if they differ), whether any
        ran out of its time budget, and whether prompt banning has left too few training prompts to draw
        an iteration from (the run then ends as if its epochs were done).

        Processes get a signal at different moments (or only one of them does) and each times its own
        epochs, so both are taken from all of them, in one all-reduce (max) that every process makes
        once per epoch: they all stop after the same epoch, and their collectives keep matching.
        """
        cfg = self.cfg
        stop.announce()
        out_of_time = bool(cfg.time_budget_minutes) and self.state.train_seconds >= 60 * cfg.time_budget_minutes
        flags = torch.tensor([float(stop.signum or 0), float(out_of_time), float(self.sampler.exhausted())],
                             device=self.accelerator.device)
        signum, late, exhausted = (int(v) for v in self.accelerator.reduce(flags, "max").tolist())
        return signum or None, bool(late), bool(exhausted)

    def _write_curve(self) -> None:
        if self.accelerator.is_main_process:
            plot_reward_curve(self.metrics_log.records(), self.output_dir / "reward_curve.png",
                              title=f"{self.output_dir.name}: training reward and evaluation by epoch")

    # ----------------------------------------------------------------------------------- export
    def export(self) -> Path:
        """Write ``final/lora`` (diffusers LoRA format, EMA weights if enabled) and ``final/pipeline``
        (the merged pipeline, when ``log.export_merged``; the fully fine-tuned one otherwise)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        final = self.output_dir / "final"
        self.models.export(final)  # every process: a sharded denoiser is gathered first
        if acc.is_main_process:
            logger.info("exported %s", ", ".join(str(p) for p in sorted(final.iterdir())))
        acc.wait_for_everyone()
        return final


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: what a failed start created and left unused."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_text_atomically(path: Path, text: str) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _flat_scalars(tree: dict, prefix: str = "") -> dict:
    """Flatten a nested config to the scalar values trackers accept (lists and dicts become strings)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_scalars(value, name + ".") if value and all(isinstance(v, dict) for v in value.values())
                       else {name: str(value)})
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value if value is not None else "None"
        else:
            out[name] = str(value)
    return out


__all__ = ["TrainState", "Trainer"]
