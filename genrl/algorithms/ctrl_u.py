"""Ctrl-U (arXiv 2410.11236) on the shared trainer: a differentiable reward on one-step predictions, weighted by
the reward's own uncertainty.

Ctrl-U fine-tunes on (x0, condition) pairs with the diffusion loss plus a reward loss on one-step x0
predictions. Its uncertainty needs no second generation: the batch is duplicated with the *same* x0, noise and
condition at timesteps t and t + 1, both one-step predictions are decoded and scored, and where the two rewards
disagree the reward is unreliable, so its loss is down-weighted by ``exp(-U)``
(:func:`rewards.ctrl_u.uncertainty_weighted_loss`). The data: each training prompt's reference images
(``ctrl_u.references``: ``toy`` renders the toy world's scenes of the prompt; a folder with ``metadata.jsonl``
holds images per prompt, see :class:`rewards.references.ReferenceImages`), encoded by the family's VAE
(``ModelAdapter.encode_images``); one reference per prompt per epoch, drawn by the run's seed. (Training on the
policy's own samples instead drifted on the toy world: the conditional model fitted to its guided samples
compounds the guidance every epoch.)

Per sample, with flow level ``s ~ U[0, 1)`` and ``s2 = min(s + ctrl_u.step, 1)`` (Ctrl-U's ``t + 1`` of 1,000
timesteps), one noise ``eps`` for both copies, ``x0_hat(s) = x_s - s v(x_s)`` from the conditional model:

- ``L_diff``: the flow-matching error ``mean((v - (eps - x0))^2)`` of both copies (Ctrl-U's diffusion loss);
- rewards ``r1 = r(decode(x0_hat(s)))`` and ``r2 = r(decode(x0_hat(s2)))``, both differentiable; the loss
  ``l = ctrl_u.reward_offset - r1`` (non-negative when the offset bounds the reward, so ``exp(-U) l`` is the
  paper's heteroscedastic form); ``U = |r1 - r2|`` (the regression form for scalar rewards, not detached);
- ``L_rew = sum_b m_b exp(-U_b) l_b / sum_b m_b`` with ``m_b = [s_b <= ctrl_u.t_max]`` and the regulariser
  ``ctrl_u.reg * masked mean(U)``;
- ``L = L_diff + w L_rew + reg``, ``w = ctrl_u.grad_scale * min(1, epoch / ctrl_u.ramp_epochs)`` (Ctrl-U's
  linear reward-weight ramp, over epochs so a resumed run continues it).

Defaults are the released depth setting's (``t_max`` 400 of 1,000, ``reg`` 0.1, ``grad_scale`` 1); the ramp is
5,000 optimizer steps there, and is set in epochs here.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from genrl.generation import conditions_from_metadata
from genrl.sampling.rollout import Trajectory
from rewards.ctrl_u import regression_uncertainty, uncertainty_weighted_loss
from rewards.references import ReferenceImages
from rewards.seeding import derived_seed

from .advantages import Advantages
from .base import Algorithm, LossContext, RolloutBatch, gathered_reward_stats, register_algorithm
from .dragon import conditional_guidance, velocity_error


def one_step_prediction(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x0_hat = x_s - s v`` on the flow path ``x_s = (1 - s) x0 + s eps`` with ``v = eps - x0``."""
    return x.float() - sigma.view(-1, *([1] * (x.ndim - 1))) * v.float()


def reward_weight(epoch: int, ramp_epochs: int, grad_scale: float) -> float:
    """Ctrl-U's ramp ``grad_scale * min(1, epoch / ramp)``, 1 from the start without a ramp."""
    return grad_scale * (1.0 if ramp_epochs <= 0 else min(1.0, epoch / ramp_epochs))


@register_algorithm("ctrl_u")
class CtrlU(Algorithm):
    """Uncertainty-weighted reward fine-tuning on one-step predictions of reference images, with the diffusion loss."""

    needs_differentiable_reward = True

    def __init__(self, cfg) -> None:
        self.cfg, self.sample, self.ctrl = cfg, cfg.sample, cfg.ctrl_u
        self.reward_fn = None
        self.references = ReferenceImages(cfg.ctrl_u.references, per_prompt=cfg.ctrl_u.per_prompt, heldout=0,
                                          seed=cfg.seed)

    def setup(self, trainer) -> None:
        self.reward_fn = trainer.reward_fn

    def num_train_units(self) -> int:
        return 1

    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        return 0, 0  # (no rollouts are trained on; evaluation uses the deterministic sampler)

    def compute_advantages(self, rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> Advantages:
        raise NotImplementedError("Ctrl-U backpropagates the reward; it uses no advantages")

    def train_positions(self, batch: RolloutBatch) -> list[int]:
        return [0]

    def run_epoch(self, trainer, epoch: int) -> dict[str, float]:
        """``sample.num_batches_per_epoch`` batches of prompts, each with one encoded reference image per prompt,
        one update each; the logged reward is the one-step predictions' at the first level."""
        acc, data, adapter = trainer.accelerator, trainer.train_set, trainer.adapter
        sigmas = adapter.schedule(self.sample.num_steps)
        units = []
        for b, indices in zip(range(self.sample.num_batches_per_epoch), trainer.sampler, strict=False):
            prompts, metadata = [data.prompts[i] for i in indices], [data.metadata[i] for i in indices]
            seed_key = (self.cfg.seed, epoch, b, acc.process_index)
            images = self.references.sample(prompts, metadata,
                                            torch.Generator().manual_seed(derived_seed(*seed_key, "reference")))
            with torch.no_grad():
                x0 = adapter.encode_images(images)
                cond = adapter.encode(prompts, guidance_scale=conditional_guidance(adapter),
                                      conditions=conditions_from_metadata(adapter, metadata))
            units.append(RolloutBatch(torch.tensor(indices, device=acc.device), prompts, metadata, cond, sigmas,
                                      Trajectory.of_latents(x0, self.sample.solver), extras={"seed_key": seed_key, "epoch": epoch}))
        record = trainer.optimize_epoch(units)
        record.update(gathered_reward_stats(acc, units))
        return record

    def _rewards(self, ctx: LossContext, x0_hat: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
        media = ctx.adapter.as_media(ctx.adapter.decode(x0_hat.to(batch.trajectory.final.dtype)))
        return self.reward_fn(media, batch.prompts, batch.metadata).scores.float()

    def loss(self, ctx: LossContext, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.ctrl
        x0 = batch.trajectory.final.detach().float()
        n, device = x0.shape[0], x0.device
        g = torch.Generator().manual_seed(derived_seed(*batch.extras["seed_key"], "ctrl_u"))
        noise = torch.randn(x0.shape, generator=g).to(device)
        s1 = torch.rand(n, generator=g).to(device)
        s2 = (s1 + c.step).clamp(max=1.0)
        x = torch.cat([ctx.adapter.add_noise(x0, noise, s1), ctx.adapter.add_noise(x0, noise, s2)])
        sigma = torch.cat([s1, s2])
        w_cfg = conditional_guidance(ctx.adapter)  # the conditional model, as the cond was encoded
        v = torch.cat([ctx.adapter.velocity(x[:n], s1, batch.cond, guidance_scale=w_cfg, model=ctx.model),
                       ctx.adapter.velocity(x[n:], s2, batch.cond, guidance_scale=w_cfg, model=ctx.model)])
        diffusion = velocity_error(v, torch.cat([x0, x0]), torch.cat([noise, noise])).mean()
        x0_hat = one_step_prediction(x, v, sigma)
        r1, r2 = self._rewards(ctx, x0_hat[:n], batch), self._rewards(ctx, x0_hat[n:], batch)
        batch.rewards = r1.detach()
        finite = torch.isfinite(r1) & torch.isfinite(r2)
        if not finite.any():
            raise FloatingPointError(f"every reward of a batch is NaN/inf (prompts {batch.prompts[:3]}...); check "
                                     f"the reward models ({sorted(self.reward_fn.components)}); no update was made")
        zero = torch.zeros_like(r1)
        u = torch.where(finite, regression_uncertainty(r1, r2), zero)
        per_sample = torch.where(finite, c.reward_offset - r1, zero)
        # a sample above t_max, or with a non-finite reward, is masked (its level set above any t_max)
        levels = torch.where(finite, s1, torch.full_like(s1, 2.0))
        l_rew, l_reg = uncertainty_weighted_loss(per_sample, u, timesteps=levels, t_max=c.t_max, reg=c.reg)
        valid = levels <= c.t_max
        w = reward_weight(batch.extras["epoch"], c.ramp_epochs, c.grad_scale)
        loss = diffusion + w * l_rew + l_reg
        metrics = {"diffusion": diffusion.item(), "reward_loss": l_rew.item(), "uncertainty": u[valid].mean().item()
                   if valid.any() else 0.0, "reward_weight": w, "masked_fraction": 1.0 - valid.float().mean().item()}
        return loss, metrics
