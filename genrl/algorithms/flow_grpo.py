"""Flow-GRPO (and Flow-GRPO-Fast): per-step PPO-clip on SDE/CPS rollouts with group-relative advantages."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from genrl.sampling.rollout import sde_window
from genrl.sampling.steps import flow_step

from .advantages import Advantages, best_and_worst, group_advantages, per_reward_advantages
from .base import Algorithm, LossContext, RolloutBatch, register_algorithm
from .losses import ppo_clip_loss, step_kl


@register_algorithm("flow_grpo")
class FlowGRPO(Algorithm):
    """Flow-GRPO as the reference code defines it (see ``reference/flow-grpo.md``).

    - Rollout: ``sample.step_type`` at ``sample.noise_level`` inside the window (all steps when
      ``sample.window_size`` is 0), ODE outside.
    - Trained steps: without a window, the first ``int(T * timestep_fraction)`` of the T steps, in
      order, so with the default fraction 0.99 the last, near-deterministic step is never trained.
      With a window (Flow-GRPO-Fast) every one of its ``sample.window_size`` steps is trained and the
      fraction does not apply, as the reference's ``num_train_timesteps = sde_window_size``.
    - Advantages: per-prompt groups, global or group std, clipped; zero-std groups masked. With
      ``train.per_reward_advantages`` each reward's advantage is taken alone and the advantages are summed with
      the rewards' weights (PISCES); with ``train.best_and_worst = n`` only each group's n/2 best and n/2 worst
      samples train, their advantages taken among themselves.
    - Loss: PPO-clip on the mean-over-dimensions log-prob + ``beta`` x the step KL to the reference
      (``train.kl_convention``: the released code's, without the dt factor, or the paper's).
      For CPS, whose log-prob drops its constants, the KL is always the exact Gaussian one.
    """

    masked_samples_carry_no_loss = True

    def __init__(self, cfg) -> None:
        self.sample, self.train = cfg.sample, cfg.train

    def num_train_units(self) -> int:
        """Trained steps per rollout: the whole window, else ``int(T * train.timestep_fraction)``."""
        if self.sample.window_size:  # the window's steps were chosen to be trained: none is left out
            return self.sample.window_size
        return max(1, int(self.sample.num_steps * self.train.timestep_fraction))

    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        s = self.sample
        window_range = tuple(s.window_range) if s.window_range is not None else None
        return sde_window(num_steps, s.window_size, window_range, generator=generator)

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.reward_weights = dict(trainer.reward_fn.weights)

    def advantage_inputs(self, batches: list[RolloutBatch]) -> torch.Tensor | None:
        """With ``train.per_reward_advantages``: each sample's unweighted reward components ``(N, K)``."""
        if not self.train.per_reward_advantages:
            return None
        return torch.cat([torch.stack([b.extras["reward_components"][name].to(b.rewards.device, torch.float32)
                                       for name in self.reward_weights], 1) for b in batches])

    def compute_advantages(self, rewards: torch.Tensor, group_ids: Sequence[Hashable],
                           extra: torch.Tensor | None = None) -> Advantages:
        ids = list(group_ids)
        chosen = (best_and_worst(rewards, ids, self.train.best_and_worst) if self.train.best_and_worst
                  else torch.ones(rewards.numel(), dtype=torch.bool))
        index = chosen.nonzero().squeeze(1)
        picked = [ids[i] for i in index.tolist()]
        options = {"global_std": self.sample.global_std, "clip": self.train.adv_clip_max}
        if self.train.per_reward_advantages:
            if extra is None:
                raise ValueError("train.per_reward_advantages needs the reward components (advantage_inputs)")
            adv = per_reward_advantages(extra[index], list(self.reward_weights.values()), picked, **options)
        else:
            adv = group_advantages(rewards[index], picked, **options)
        if bool(chosen.all()):
            return adv
        advantages, keep = torch.zeros(rewards.numel()), torch.zeros(rewards.numel(), dtype=torch.bool)
        advantages[index], keep[index] = adv.advantages, adv.keep
        return Advantages(advantages, keep, {**adv.stats, "best_and_worst_kept": float(chosen.float().mean())})

    def train_positions(self, batch: RolloutBatch) -> list[int]:
        return list(range(min(self.num_train_units(), len(batch.trajectory.steps))))

    def step(self, ctx: LossContext, batch: RolloutBatch, position: int, model) -> tuple:
        """Velocity and step Gaussian of the recorded transition at ``position`` under ``model``."""
        traj, sigmas = batch.trajectory, batch.sigmas
        j = traj.steps[position]
        x = traj.states[:, position]
        v = ctx.adapter.velocity(x, sigmas[j], batch.cond, model=model)
        out = flow_step(traj.plan.step_type, x, v, sigmas[j], sigmas[j + 1], traj.plan.noise_level,
                        sigma_max=sigmas[1], sigma_min=sigmas[-1], prev_sample=traj.next_states[:, position])
        return out, sigmas[j + 1] - sigmas[j]

    def loss(self, ctx: LossContext, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        out, dt = self.step(ctx, batch, position, ctx.model)
        old = batch.trajectory.log_probs[:, position]
        keep = batch.keep
        with torch.no_grad():
            ratio_all = torch.exp(out.log_prob - old)
        if not keep.any():  # nothing to learn here; a zero loss keeps distributed backward passes in step
            return out.log_prob.sum() * 0.0, {"ratio": ratio_all.mean().item(),
                                              "ratio_max_dev": (ratio_all - 1).abs().max().item()}
        advantages = batch.advantages if batch.advantages.ndim == 1 else batch.advantages[:, position]  # per step
        policy = ppo_clip_loss(out.log_prob[keep], old[keep], advantages[keep], self.train.clip_range)
        metrics = {"policy_loss": policy.loss.item(), "approx_kl": policy.approx_kl, "clipfrac": policy.clipfrac,
                   "clipfrac_gt_one": policy.clipfrac_gt_one, "clipfrac_lt_one": policy.clipfrac_lt_one,
                   "ratio": ratio_all.mean().item(), "ratio_max_dev": (ratio_all - 1).abs().max().item()}
        loss = policy.loss
        if self.train.beta > 0:
            with torch.no_grad(), ctx.reference.active() as ref:
                ref_out, _ = self.step(ctx, batch, position, ref)
            convention = "paper" if batch.trajectory.plan.step_type == "cps" else self.train.kl_convention
            kl = step_kl(out.mean, ref_out.mean, out.std, dt, convention)[keep].mean()
            loss = loss + self.train.beta * kl
            metrics["kl_loss"] = kl.item()
        return loss, metrics
