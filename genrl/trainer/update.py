"""The update service: inner epochs of (batch, recorded step) units, each a loss and a backward, with an
optimizer step per accumulation cycle."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from accelerate import Accelerator

from genrl.algorithms import Algorithm, LossContext, RolloutBatch
from genrl.config import ExperimentConfig

from .model_state import ModelState
from .run_state import TrainState
from .sharding import full_value

RATIO_HINT = ("the training forward does not reproduce the sampling forward; likely causes: a different batch "
              "size or order, mixed precision or CFG path differing between sampling and training, dropout in "
              "train mode, or non-deterministic attention kernels")


class Updater:
    """Runs :meth:`optimize_epoch`; counts optimizer steps in ``state.global_step`` and steps the EMA."""

    def __init__(self, cfg: ExperimentConfig, accelerator: Accelerator, models: ModelState, algorithm: Algorithm,
                 state: TrainState, before_batch: Callable[[], None] = lambda: None) -> None:
        self.cfg, self.accelerator, self.models, self.algorithm, self.state = cfg, accelerator, models, algorithm, state
        self.before_batch = before_batch

    def optimize_epoch(self, batches: list[RolloutBatch]) -> dict[str, float]:
        """Inner epochs of (batch, recorded step) units: loss, backward, and an optimizer step per accumulation."""
        cfg, acc, models = self.cfg, self.accelerator, self.models
        # an algorithm calling the denoiser many times per backward gets it without DDP and its gradients averaged
        # here (a sharded denoiser synchronises itself)
        manual_sync = self.algorithm.many_forwards_per_backward and not models.sharded
        ctx = LossContext(models.adapter, models.unwrapped if manual_sync else models.model, models.reference)
        sums: dict[str, list[float]] = {}
        first_ratio_dev = None
        # on one process a batch whose samples are all masked can skip its forward passes (not under DeepSpeed,
        # whose engine takes its optimizer step inside the cycle's last backward)
        skip_allowed = (acc.num_processes == 1 and self.algorithm.masked_samples_carry_no_loss
                        and models.zero_stage is None)
        models.model.train()
        for _ in range(cfg.train.num_inner_epochs):
            backward_in_cycle = False
            for batch in batches:
                self.before_batch()
                for pos in self.algorithm.train_positions(batch):
                    with acc.accumulate(models.model):
                        # nothing to learn from an all-masked batch: on one process its forward can be
                        # skipped (after the first unit, which checks the on-policy ratio)
                        skip = skip_allowed and not batch.keep.any() and first_ratio_dev is not None
                        if not skip:
                            with acc.autocast():
                                loss, metrics = self.algorithm.loss(ctx, batch, pos)
                            if first_ratio_dev is None:
                                first_ratio_dev = metrics.get("ratio_max_dev", 0.0)
                            if not torch.isfinite(loss):
                                traj = batch.trajectory
                                step = traj.steps[pos] if traj is not None and traj.steps else pos
                                raise FloatingPointError(f"non-finite loss at epoch {self.state.epoch}, step "
                                                         f"{step}: {metrics}")
                            acc.backward(loss)
                            backward_in_cycle = True
                            for k, v in metrics.items():
                                sums.setdefault(k, []).append(v)
                        if acc.sync_gradients:
                            if backward_in_cycle:
                                if manual_sync and acc.num_processes > 1:
                                    average_gradients(models.params)
                                grad_norm = acc.clip_grad_norm_(models.params, cfg.train.max_grad_norm)
                                sums.setdefault("grad_norm", []).append(float(full_value(grad_norm)))
                                models.optimizer.step()
                                models.lr_scheduler.step()
                                self.state.global_step += 1
                                models.after_optimizer_step(self.state.global_step)
                            models.optimizer.zero_grad(set_to_none=True)
                            backward_in_cycle = False
        out = {f"train/{k}": float(np.mean(v)) for k, v in sums.items()}
        if first_ratio_dev is not None:
            out["train/first_ratio_max_dev"] = first_ratio_dev
            if first_ratio_dev > cfg.log.ratio_tolerance:
                warnings.warn(f"epoch {self.state.epoch}: the on-policy importance ratio deviates from 1 by "
                              f"{first_ratio_dev:.2e} (> log.ratio_tolerance={cfg.log.ratio_tolerance}); {RATIO_HINT}",
                              RuntimeWarning, stacklevel=2)
        return out


def average_gradients(params) -> None:
    """Average the gradients of ``params`` over the processes (what DDP's reducer does after a backward)."""
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is None:  # every process reduces the same tensors, in the same order
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(world)
