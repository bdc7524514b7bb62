"""Reward backpropagation (DRaFT-K, AlignProp): the gradient of a differentiable reward through the decoder and
the last K sampling steps, on the shared trainer.

Each sampling batch of the epoch is one training unit: its images are generated from fresh noise with the
current weights, the steps ``j >= T - K`` keep gradients (each recomputed in the backward pass when
``backprop.checkpoint``, as is the decoder), and the loss is ``-loss_scale * mean reward``; the state entering
step ``T - K`` is detached (DRaFT's truncation). With ``backprop.truncation=random`` K is drawn per batch,
uniformly from 1 to ``backprop.grad_steps`` (AlignProp's randomised truncation, ``truncated_backprop_rand``).
The rollout follows ``sample.step_type`` at ``sample.noise_level`` on every step (noise 0: the deterministic
sampler, as DRaFT; stochastic steps are differentiated through their reparameterised noise).

``backprop.truncation=one_step`` backpropagates a one-step prediction instead (ReFL; PISCES's direct
backpropagation scores one-step predictions too): per batch a step index ``j`` is drawn uniformly from
``backprop.one_step_range`` (default every step), the sampler runs steps ``0 .. j-1`` without gradients (Euler
outside the SDE window, whatever ``sample.solver``), and the
reward scores ``x0_hat = x_j - sigma_j * v_theta(x_j)`` (one Euler step to the schedule's end) decoded with
gradients. Early ``j`` reach the steps where a sample's layout and motion are decided, which the last K steps of
DRaFT-K do not; the prediction there is the blurry posterior mean, so the reward must still read it.

``train.beta > 0`` adds a regulariser to the reference (the adapter disabled): ``beta`` times the mean over the
kept steps of ``mean((v_theta(x_j) - v_ref(x_j))^2)`` at the rollout's states, the per-step term of the KL
between the two models' sampling paths (Girsanov: the drift difference squared), up to the noise scale.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from genrl.generation import generate
from rewards.seeding import derived_seed

from .advantages import Advantages
from .base import Algorithm, LossContext, RolloutBatch, gathered_reward_stats, register_algorithm

#: ``backprop.truncation`` values
TRUNCATIONS = ("fixed", "random", "one_step")


def kept_steps(num_steps: int, grad_steps: int, truncation: str, generator: torch.Generator) -> int:
    """K, the number of final sampling steps that keep gradients: ``grad_steps`` (``fixed``) or uniform in
    ``[1, grad_steps]`` (``random``)."""
    if not 1 <= grad_steps <= num_steps:
        raise ValueError(f"backprop.grad_steps={grad_steps} must be in [1, sample.num_steps={num_steps}]")
    if truncation == "fixed":
        return grad_steps
    if truncation == "random":
        return int(torch.randint(1, grad_steps + 1, (1,), generator=generator))
    raise ValueError(f"backprop.truncation={truncation!r} must be one of {TRUNCATIONS}")


def one_step_index(num_steps: int, step_range: Sequence[int] | None, generator: torch.Generator) -> int:
    """The step ``j`` whose state is predicted to the end in one step: uniform in ``step_range`` ``[lo, hi)``
    (default ``[0, num_steps)``)."""
    lo, hi = step_range if step_range is not None else (0, num_steps)
    if not 0 <= lo < hi <= num_steps:
        raise ValueError(f"backprop.one_step_range={list(step_range)} must satisfy 0 <= start < end <= "
                         f"sample.num_steps={num_steps}")
    return int(torch.randint(lo, hi, (1,), generator=generator))


def one_step_schedule(sigmas: torch.Tensor, j: int) -> torch.Tensor:
    """The schedule's first ``j + 1`` levels and its last: step ``j`` then jumps straight to the end, so a
    deterministic Euler step there is the one-step prediction ``x_j + (sigma_end - sigma_j) v``."""
    return torch.cat([sigmas[:j + 1], sigmas[-1:]])


def velocity_regulariser(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """Per-sample ``mean((v - v_ref)^2)`` over every dimension but the batch."""
    return (v.float() - v_ref.float()).pow(2).mean(dim=tuple(range(1, v.ndim)))


@register_algorithm("reward_backprop")
class RewardBackprop(Algorithm):
    """DRaFT-K / AlignProp: ``-loss_scale * r(decode(x_0))`` backpropagated through the last K steps."""

    needs_differentiable_reward = True
    many_forwards_per_backward = True

    def __init__(self, cfg) -> None:
        self.cfg, self.sample, self.train, self.backprop = cfg, cfg.sample, cfg.train, cfg.backprop
        self.reward_fn = None
        self._count_samples = None

    def setup(self, trainer) -> None:
        self.reward_fn = trainer.reward_fn
        self._count_samples = trainer.count_samples

    def num_train_units(self) -> int:
        return 1

    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        # the sampler of the update itself: stochastic on every step when sample.noise_level > 0
        return (0, num_steps) if self.sample.noise_level > 0 else (0, 0)

    def compute_advantages(self, rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> Advantages:
        raise NotImplementedError("reward backpropagation uses the reward itself, not advantages")

    def train_positions(self, batch: RolloutBatch) -> list[int]:
        return [0]

    def run_epoch(self, trainer, epoch: int) -> dict[str, float]:
        """``sample.num_batches_per_epoch`` units (prompts and seeds only: each is generated inside its loss, with
        the weights of that moment), the updates, then the epoch's rewards gathered from every process."""
        acc, data = trainer.accelerator, trainer.train_set
        sigmas = trainer.adapter.schedule(self.sample.num_steps)
        units = []
        for _b, indices in zip(range(self.sample.num_batches_per_epoch), trainer.sampler, strict=False):
            units.append(RolloutBatch(
                torch.tensor(indices, device=acc.device), [data.prompts[i] for i in indices],
                [data.metadata[i] for i in indices], cond=None, sigmas=sigmas, trajectory=None, extras={"seed_key": (self.cfg.seed, epoch, trainer.sampler.iteration,
                                                      acc.process_index)}))
        record = trainer.optimize_epoch(units)
        record.update(gathered_reward_stats(acc, units))
        return record

    def loss(self, ctx: LossContext, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        s, bp = self.sample, self.backprop
        key = batch.extras["seed_key"]
        n = len(batch.prompts)
        device = batch.prompt_index.device
        gens = [torch.Generator(device=device).manual_seed(derived_seed(*key, "init", b)) for b in range(n)]
        step_gens = [torch.Generator(device=device).manual_seed(derived_seed(*key, "sde", b)) for b in range(n)]
        draw = torch.Generator().manual_seed(derived_seed(*key, "truncation"))
        sigmas = batch.sigmas.to(device)
        if bp.truncation == "one_step":
            j = one_step_index(s.num_steps, bp.one_step_range, draw)
            sigmas, grad_from, k = one_step_schedule(sigmas, j), j, 1
            # stochastic steps (noise_level > 0) before j only: the jump itself is the deterministic prediction
            window = (0, j) if s.noise_level > 0 else (0, 0)
        else:
            k = kept_steps(s.num_steps, bp.grad_steps, bp.truncation, draw)
            grad_from = s.num_steps - k
            window = self.rollout_window(s.num_steps, torch.Generator())
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []

        def record(x: torch.Tensor, sigma: torch.Tensor) -> None:
            # the states entering the kept steps (those run with gradients); a checkpoint's recomputation in the
            # backward pass appends again, after the regulariser has read the list
            if torch.is_grad_enabled():
                kept.append((x.detach(), sigma))

        out = generate(ctx.adapter, batch.prompts, batch.metadata, sigmas=sigmas, noise_generators=gens,
                       model=ctx.model, step_type=s.step_type, noise_level=s.noise_level,
                       window=window, step_generators=step_gens,
                       ode_solver="euler" if bp.truncation == "one_step" else s.solver,  # the jump is an Euler step
                       grad_from=grad_from, checkpoint=bp.checkpoint,
                       on_step=record if self.train.beta > 0 else None)
        scored = self.reward_fn(out.media, batch.prompts, batch.metadata)
        scores = scored.scores.to(device, torch.float32)
        finite = torch.isfinite(scores)
        batch.rewards = scores.detach()
        if self._count_samples is not None:
            self._count_samples(n)
        if not finite.any():
            raise FloatingPointError(f"every reward of a batch is NaN/inf (prompts {batch.prompts[:3]}...); check "
                                     f"the reward models ({sorted(self.reward_fn.components)}); no update was made")
        reward = scores[finite].mean()
        loss = -bp.loss_scale * reward
        metrics = {"reward": reward.item(), "kept_steps": float(k)}
        if bp.truncation == "one_step":
            metrics["one_step_index"] = float(grad_from)
        if self.train.beta > 0:
            reg = torch.stack([self._regulariser(ctx, x, sigma, out.cond) for x, sigma in kept]).mean()
            loss = loss + self.train.beta * reg
            metrics["regulariser"] = reg.item()
        return loss, metrics

    @staticmethod
    def _regulariser(ctx: LossContext, x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        v = ctx.adapter.velocity(x, sigma, cond, model=ctx.model)
        with torch.no_grad(), ctx.reference.active() as reference:
            v_ref = ctx.adapter.velocity(x, sigma, cond, model=reference)
        return velocity_regulariser(v, v_ref).mean()
