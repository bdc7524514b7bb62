"""TP-GRPO: Flow-GRPO with step-level incremental rewards and turning points (``reference/tp-grpo.md``).

The window is the first W steps. After each rollout, every intermediate latent x^(k) (k = 0..W-1)
is completed with the deterministic sampler under the current policy, decoded and scored; x^(0) is
the rollout's own initial noise (the released code draws different noise here, a bug), and the
final rollout image's reward is reused as R_W. Step rewards come from
:mod:`genrl.algorithms.turning_points`; advantages are per step and per prompt with the group std.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from genrl.generation import complete

from .advantages import Advantages, group_advantages
from .base import RolloutBatch, register_algorithm
from .flow_grpo import FlowGRPO
from .turning_points import step_rewards


@register_algorithm("tp_grpo")
class TPGRPO(FlowGRPO):
    """TP-GRPO on the shared trainer; everything not listed in the module docstring is Flow-GRPO."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.tp = cfg.tp
        self.window = cfg.sample.window_size or cfg.sample.num_steps - 1
        self.counts = {"turning_points": 0.0, "kept": 0.0, "trajectories": 0.0, "extra_calls": 0.0,
                       "reward_calls": 0.0}

    def num_train_units(self) -> int:
        return self.window

    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        return 0, self.window

    def train_positions(self, batch: RolloutBatch) -> list[int]:
        return list(range(len(batch.trajectory.steps)))

    @torch.no_grad()
    def after_sampling(self, trainer, batch: RolloutBatch) -> None:
        """R_0 .. R_{W-1}: rewards of ODE completions from x^(0) = x_T, ..., x^(W-1)."""
        adapter, traj, sigmas = trainer.adapter, batch.trajectory, batch.sigmas
        rewards, calls = [], 0
        for k in range(self.window):
            start = traj.steps[k]
            images = complete(adapter, batch.cond, traj.states[:, k], sigmas[start:], model=trainer.unwrapped)
            calls += len(sigmas) - 1 - start
            rewards.append(trainer.reward_fn(images, batch.prompts, batch.metadata).scores.float())
        batch.extras["partial_rewards"] = torch.stack(rewards, 1)  # (B, W)
        self.counts["extra_calls"] += calls * len(batch.prompts)
        self.counts["reward_calls"] += self.window * len(batch.prompts)

    def advantage_inputs(self, batches: list[RolloutBatch]) -> torch.Tensor:
        """Per-step rewards (B, W) of each batch, balanced within the batch, with R_W the batch's own rewards."""
        out = []
        for batch in batches:
            R = torch.cat([batch.extras["partial_rewards"].to(batch.rewards.device), batch.rewards[:, None]], 1)
            found = step_rewards(R, balance=False)[1]
            r, kept = step_rewards(R, balance=self.tp.balance, bonus=self.tp.bonus)
            self.counts["turning_points"] += float(found.sum())
            self.counts["kept"] += float(kept.sum())
            self.counts["trajectories"] += float(R.shape[0])
            out.append(r)
        return torch.cat(out)

    def compute_advantages(self, rewards: torch.Tensor, group_ids: Sequence[Hashable],
                           extra: torch.Tensor | None = None) -> Advantages:
        if extra is None:
            raise ValueError("tp_grpo needs the per-step rewards (advantage_inputs)")
        columns = [group_advantages(extra[:, k], group_ids, global_std=False, clip=self.train.adv_clip_max)
                   for k in range(extra.shape[1])]
        adv = torch.stack([c.advantages for c in columns], 1)
        keep = torch.isfinite(rewards) & (adv != 0).any(1)  # rows zero at every step are dropped
        stats = {"nonfinite": float((~torch.isfinite(rewards)).sum()), "num_groups": columns[0].stats["num_groups"],
                 "zero_std_ratio": float(sum(c.stats["zero_std_ratio"] for c in columns) / len(columns)),
                 "group_size_one": columns[0].stats["group_size_one"]}
        return Advantages(adv, keep, stats)

    def after_epoch(self, trainer) -> dict[str, float]:
        n = max(1.0, self.counts["trajectories"])
        metrics = {"tp/turning_points_per_trajectory": self.counts["turning_points"] / n,
                   "tp/kept_after_balancing": self.counts["kept"] / max(1.0, self.counts["turning_points"]),
                   "tp/extra_transformer_calls_per_trajectory": self.counts["extra_calls"] / n,
                   "tp/reward_calls_per_trajectory": 1 + self.counts["reward_calls"] / n}
        self.counts = dict.fromkeys(self.counts, 0.0)
        return metrics
