"""DiffusionNFT: negative-aware fine-tuning on the forward process (see ``reference/diffusion-nft.md``).

Rollouts use any deterministic sampler and keep only the clean latent. The loss contrasts the
implicit positive and negative policies ``v+ = b v + (1 - b) v_old`` and ``v- = (1 + b) v_old - b v``
(mirrored around the old policy, a second LoRA adapter) in x0 space, weighted by the optimality
probability ``r`` of each sample, plus a small KL to the reference (the adapters disabled).
"""

from __future__ import annotations

import torch

from genrl.models.lora import adapter_active, update_adapter_ema
from rewards.seeding import derived_seed

from .advantages import group_advantages
from .base import Algorithm, LossContext, RolloutBatch, register_algorithm

OLD_ADAPTER = "old"


def optimality_probability(advantages: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
    """``r = clamp(0.5 + clip(A, -c, c) / (2c), 0, 1)``: A in [-c, c] mapped linearly onto [0, 1]."""
    return (0.5 + advantages.clamp(-clip, clip) / (2 * clip)).clamp(0.0, 1.0)


def implicit_policies(v: torch.Tensor, v_old: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v+, v-)`` with ``v+ = beta v + (1 - beta) v_old`` and ``v- = (1 + beta) v_old - beta v``."""
    return beta * v + (1 - beta) * v_old, (1 + beta) * v_old - beta * v


def old_decay(step: int, decay_type: int = 1) -> float:
    """The old adapter's EMA decay after ``step`` training steps (the reference's two schedules)."""
    if decay_type == 1:
        return min(0.001 * step, 0.5)
    if decay_type == 2:
        return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.999)
    raise ValueError(f"unknown old-adapter decay type {decay_type}")


def _mean_dims(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def nft_loss(v: torch.Tensor, v_old: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
             r: torch.Tensor, beta: float, *, scale: float = 5.0, floor: float = 1e-5) -> torch.Tensor:
    """Per-sample NFT loss ``scale * (r L+ / w+ + (1 - r) L- / w-) / beta``.

    ``L± = mean((x0± - x0)^2)`` with ``x0± = x_t - t v±`` and ``w± = sg(mean|x0± - x0|)`` floored at
    ``floor``; ``t`` is per sample. Returns shape ``(B,)``.
    """
    v_pos, v_neg = implicit_policies(v, v_old.detach(), beta)
    t = t.reshape(-1, *([1] * (x_t.ndim - 1)))
    x0_pos, x0_neg = x_t - t * v_pos, x_t - t * v_neg
    w_pos = _mean_dims((x0_pos - x0).abs()).detach().clamp(min=floor)
    w_neg = _mean_dims((x0_neg - x0).abs()).detach().clamp(min=floor)
    l_pos = _mean_dims((x0_pos - x0) ** 2) / w_pos
    l_neg = _mean_dims((x0_neg - x0) ** 2) / w_neg
    return scale * (r * l_pos + (1 - r) * l_neg) / beta


@register_algorithm("diffusion_nft")
class DiffusionNFT(Algorithm):
    """DiffusionNFT on the shared trainer.

    - Rollout: the deterministic sampler (``sample.noise_level`` is ignored), with the old adapter;
      only the final latent is used. Set ``sample.guidance_scale=1`` for the paper's CFG-free recipe.
    - Units: ``int(T * timestep_fraction)`` per batch; unit ``k`` uses, per sample, the ``k``-th
      entry of a random permutation of the T schedule times (9 of 10 by default), with fresh noise.
    - Loss: :func:`nft_loss` + ``train.beta * mean((v - v_ref)^2)``.
    - After each epoch the old adapter moves toward the trained one with :func:`old_decay`.
    """

    def __init__(self, cfg) -> None:
        self.cfg, self.sample, self.train, self.nft = cfg, cfg.sample, cfg.train, cfg.nft
        if not cfg.lora.enabled:
            raise ValueError("diffusion_nft keeps the old policy as a second LoRA adapter; set lora.enabled=true")
        self.sampler = None  # the trainer's prompt sampler; banned prompts are recorded there (checkpointed)

    extra_lora_adapters = (OLD_ADAPTER,)  # the old policy, added by the trainer

    def setup(self, trainer) -> None:
        self.sampler = trainer.sampler

    def sampling_policy(self, trainer):
        return adapter_active(trainer.unwrapped, OLD_ADAPTER)

    def num_train_units(self) -> int:
        return max(1, int(self.sample.num_steps * self.train.timestep_fraction))

    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        return 0, 0  # deterministic sampling, nothing recorded but the final latent

    def compute_advantages(self, rewards, group_ids):
        adv = group_advantages(rewards, group_ids, global_std=self.sample.global_std, clip=self.train.adv_clip_max)
        if self.nft.ban_std > 0:
            self._ban_solved(rewards, group_ids)
            adv.stats["banned_prompts"] = float(len(self.sampler.banned))
        return adv

    def _ban_solved(self, rewards: torch.Tensor, group_ids) -> None:
        groups: dict = {}
        for value, gid in zip(rewards.tolist(), group_ids, strict=True):
            groups.setdefault(gid, []).append(value)
        for gid, values in groups.items():
            vals = torch.tensor(values, dtype=torch.float64)
            if len(values) > 1 and vals.std(unbiased=False) < self.nft.ban_std and vals.mean() > self.nft.ban_mean:
                self.sampler.banned.add(int(gid))

    def train_positions(self, batch: RolloutBatch) -> list[int]:
        return list(range(self.num_train_units()))

    def _unit_randomness(self, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample schedule index of this unit and the fresh noise, reproducible from the batch's seed key."""
        x0 = batch.trajectory.final
        if "nft_order" not in batch.extras:  # one permutation of the schedule per sample, drawn once per batch
            g = torch.Generator().manual_seed(derived_seed(*batch.extras["seed_key"], "nft-order"))
            batch.extras["nft_order"] = torch.stack([torch.randperm(self.sample.num_steps, generator=g)
                                                     for _ in range(x0.shape[0])])
        order = batch.extras["nft_order"]
        g_noise = torch.Generator().manual_seed(derived_seed(*batch.extras["seed_key"], "nft-noise", position))
        noise = torch.randn(x0.shape, generator=g_noise, dtype=torch.float32).to(x0.device)
        return order[:, position], noise

    def loss(self, ctx: LossContext, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        x0 = batch.trajectory.final.float()
        index, noise = self._unit_randomness(batch, position)
        t = batch.sigmas[index.to(batch.sigmas.device)].to(x0.device)
        x_t = ctx.adapter.add_noise(x0, noise, t).to(batch.trajectory.final.dtype)
        model_unwrapped = ctx.adapter.transformer
        v = ctx.adapter.velocity(x_t, t, batch.cond, model=ctx.model).float()
        with torch.no_grad(), adapter_active(model_unwrapped, OLD_ADAPTER):
            v_old = ctx.adapter.velocity(x_t, t, batch.cond, model=model_unwrapped).float()
        r = optimality_probability(batch.advantages, self.train.adv_clip_max)
        per_sample = nft_loss(v, v_old, x_t.float(), x0, t, r, self.nft.beta, scale=self.nft.loss_scale,
                              floor=self.nft.weight_floor)
        valid = torch.isfinite(batch.rewards) if batch.rewards is not None else torch.ones_like(r, dtype=torch.bool)
        loss = per_sample[valid].mean() if valid.any() else per_sample.sum() * 0.0
        metrics = {"nft_loss": loss.item(), "r_mean": r[valid].mean().item() if valid.any() else 0.5}
        if self.train.beta > 0:
            with torch.no_grad(), ctx.reference.active() as ref:
                v_ref = ctx.adapter.velocity(x_t, t, batch.cond, model=ref).float()
            kl = ((v - v_ref) ** 2).mean()
            loss = loss + self.train.beta * kl
            metrics["kl_loss"] = kl.item()
        return loss, metrics

    def after_epoch(self, trainer) -> dict[str, float]:
        decay = old_decay(trainer.state.global_step, self.nft.old_decay_type)
        update_adapter_ema(trainer.unwrapped, OLD_ADAPTER, source="default", decay=decay)
        return {"nft/old_decay": decay}
