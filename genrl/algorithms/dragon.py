"""DRAGON (distributional rewards, arXiv 2504.15217) on the shared trainer.

Each epoch generates on-policy (the deterministic sampler from fresh noise, ``k`` samples per prompt), scores
the samples, splits them into demonstrations D+ and D- and trains a contrastive preference loss against the
frozen reference (the adapter disabled). DRAGON has released no code; this follows its paper and the
reconstruction in ``shared/reference/dragon.md``:

- **paired** (``dragon.demonstrations=paired``): per prompt group, the best sample is the winner and the worst
  the loser; the Diffusion-DPO loss ``-log sigmoid(-beta/2 [(e_w - e_w,ref) - (e_l - e_l,ref)])`` in the form of
  flow_grpo's online DPO script (``beta`` 100 there), ``e`` the flow-matching velocity error at a time and noise
  shared by the pair, the policy and the reference;
- **unpaired** (``unpaired``): samples above the epoch's median reward form D+, those below D-, with the
  Diffusion-KTO loss ``1 - sigmoid(beta (z0 - de))`` on D+ and ``1 - sigmoid(beta (de - z0))`` on D-.

Set rewards (``arity = "set"``: ``dataset_fd``, ``vendi``, see :mod:`rewards.set_rewards`) are not decomposed
per sample: when the training reward is one set reward, the epoch's samples (every process's) are the set, and
``dragon.set_selection`` chooses the demonstrations: ``leave_one_out`` (each sample's contribution
``r(B) - r(B without i)`` stands in for its reward, paired or unpaired as above) or ``greedy`` (D+ grown greedily
to ``dragon.greedy_fraction`` of the set, D- the rest; unpaired only). Instance rewards use the per-sample scores.
The
demonstrations are chosen from every process's samples (gathered), then their latents are shared out so each
process trains the same number of preference batches (collectives stay in step).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object

from genrl.generation import conditions_from_metadata
from genrl.sampling.rollout import Trajectory
from rewards.seeding import derived_seed

from .advantages import Advantages, group_advantages
from .base import Algorithm, LossContext, RolloutBatch, register_algorithm

#: ``dragon.demonstrations`` values and the loss each uses
DEMONSTRATIONS = {"paired": "dpo", "unpaired": "kto"}


# ----------------------------------------------------------------------------------- demonstrations
def paired_demonstrations(rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> list[tuple[int, int]]:
    """``(winner, loser)`` indices per prompt group: its best and worst finite reward (first of ties), for groups
    with at least two finite rewards that differ; groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, gid in enumerate(group_ids):
        if torch.isfinite(rewards[i]):
            groups.setdefault(gid, []).append(i)
    pairs = []
    for members in groups.values():
        values = rewards[members]
        if len(members) >= 2 and values.max() > values.min():
            pairs.append((members[int(values.argmax())], members[int(values.argmin())]))
    return pairs


def unpaired_demonstrations(rewards: torch.Tensor) -> torch.Tensor:
    """Labels ``+1`` (D+: above the median of the finite rewards), ``-1`` (D-: below it) and ``0`` (at the median,
    or not finite: left out)."""
    finite = torch.isfinite(rewards)
    labels = torch.zeros(rewards.shape, dtype=torch.long)
    if finite.sum() < 2:
        return labels
    median = rewards[finite].median()
    labels[finite & (rewards > median)] = 1
    labels[finite & (rewards < median)] = -1
    return labels


def _subset(items: torch.Tensor | Sequence, index: Sequence[int]):
    """``items[index]`` for a tensor of embeddings, the listed elements for a list (per-sample frame sets)."""
    return items[list(index)] if isinstance(items, torch.Tensor) else [items[i] for i in index]


def leave_one_out_contributions(set_reward: Callable[[Any], float], items: torch.Tensor | Sequence) -> torch.Tensor:
    """Each sample's contribution ``r(B) - r(B without i)`` to a set reward of the whole set ``B`` (float64)."""
    whole, n = set_reward(items), len(items)
    return torch.tensor([whole - set_reward(_subset(items, [j for j in range(n) if j != i])) for i in range(n)],
                        dtype=torch.float64)


def leave_one_out_labels(set_reward: Callable[[Any], float], items: torch.Tensor | Sequence) -> torch.Tensor:
    """D+ / D- for a set reward: the leave-one-out contributions split at their median (labels as
    :func:`unpaired_demonstrations`). ``items``: an ``(n, d)`` tensor of embeddings or a list of per-sample
    frame sets, whatever ``set_reward`` takes."""
    return unpaired_demonstrations(leave_one_out_contributions(set_reward, items))


def greedy_positive_set(set_reward: Callable[[Any], float], items: torch.Tensor | Sequence,
                        size: int) -> torch.Tensor:
    """D+ for a set reward by greedy selection: ``size`` samples, each step adding the one that most raises
    ``r(D+)`` (from the best pair of seeds: a set reward needs two members); D- is the rest. Labels as
    :func:`unpaired_demonstrations`."""
    n = len(items)
    if not 2 <= size < n:
        raise ValueError(f"greedy_positive_set: size must be in [2, {n}) for {n} samples, got {size}")
    best = max(((i, j) for i in range(n) for j in range(i + 1, n)), key=lambda p: set_reward(_subset(items, p)))
    chosen = list(best)
    while len(chosen) < size:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: set_reward(_subset(items, chosen + [i]))))
    labels = -torch.ones(n, dtype=torch.long)
    labels[chosen] = 1
    return labels


# ----------------------------------------------------------------------------------- losses
def dpo_loss(err_w: torch.Tensor, ref_w: torch.Tensor, err_l: torch.Tensor, ref_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Per-pair Diffusion-DPO on velocity errors: ``-log sigmoid(-beta/2 [(e_w - ref_w) - (e_l - ref_l)])``."""
    return -F.logsigmoid(-0.5 * beta * ((err_w - ref_w) - (err_l - ref_l)))


def kto_loss(err: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor, beta: float, z0: float = 0.0) -> torch.Tensor:
    """Per-sample Diffusion-KTO: ``1 - sigmoid(beta (z0 - de))`` on D+ (labels 1), ``1 - sigmoid(beta (de - z0))`` on
    D- (labels -1), with ``de = e - ref``; 0 for unlabelled samples."""
    delta = err - ref
    positive = 1 - torch.sigmoid(beta * (z0 - delta))
    negative = 1 - torch.sigmoid(beta * (delta - z0))
    return torch.where(labels > 0, positive, torch.where(labels < 0, negative, torch.zeros_like(delta)))


def conditional_guidance(adapter) -> float | None:
    """The guidance of the conditional model the preference loss trains: 1 (no CFG batch) for a CFG family, the
    adapter's own scale for a guidance-distilled one (FLUX), whose guidance is an input of the model."""
    return 1.0 if adapter.use_cfg else None


def velocity_error(v: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample flow-matching error ``mean((v - (noise - x0))^2)`` (the adapters' velocity is in flow units)."""
    return (v.float() - (noise - x0).float()).square().flatten(1).mean(1)


def single_set_reward(reward_fn):
    """The training reward's one component when it is a set reward (``arity == "set"``) with a positive weight,
    else None (a set reward mixed with others counts by its per-batch leave-one-out scores)."""
    parts = list(reward_fn.components.values())
    if len(parts) == 1 and getattr(parts[0], "arity", "sample") == "set" and next(iter(reward_fn.weights.values())) > 0:
        return parts[0]
    return None


# ----------------------------------------------------------------------------------- the algorithm
@register_algorithm("dragon")
class Dragon(Algorithm):
    """DRAGON: on-policy demonstrations D+ / D- from the reward, a DPO (paired) or KTO (unpaired) loss against
    the reference (``dragon.*`` settings; ``train.beta`` is not used: the preference loss is the KL-regularised
    objective)."""

    name = "dragon"

    def __init__(self, cfg) -> None:
        self.cfg, self.sample, self.train, self.dragon = cfg, cfg.sample, cfg.train, cfg.dragon
        self.loss_kind = DEMONSTRATIONS[self.dragon.demonstrations]

    def needs_reference(self) -> bool:
        return True

    def num_train_units(self) -> int:
        return 1

    def rollout_window(self, num_steps: int, generator: torch.Generator) -> tuple[int, int]:
        return 0, 0  # the deterministic sampler: only the final latent is trained on

    def compute_advantages(self, rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> Advantages:
        # for the logged statistics; the demonstrations use the rewards themselves
        return group_advantages(rewards, group_ids, global_std=self.sample.global_std)

    def train_positions(self, batch: RolloutBatch) -> list[int]:
        return [0]

    def run_epoch(self, trainer, epoch: int) -> dict[str, float]:
        batches = trainer.sample_epoch(epoch)
        record = trainer.score_epoch(batches)
        units, stats = self.preference_batches(trainer, batches, epoch)
        record.update(stats)
        if units:
            record.update(trainer.optimize_epoch(units))
        return record

    def preference_batches(self, trainer, batches: list[RolloutBatch], epoch: int) -> tuple[list[RolloutBatch], dict]:
        """Choose D+ / D- from every process's samples and build this process's share of preference batches."""
        acc = trainer.accelerator
        x0 = acc.gather(torch.cat([b.trajectory.final for b in batches]))
        rewards = acc.gather(torch.cat([b.rewards for b in batches])).cpu()
        ids = acc.gather(torch.cat([b.prompt_index for b in batches])).cpu().tolist()
        set_reward = single_set_reward(trainer.reward_fn)
        labels = None
        stats: dict[str, float] = {}
        if set_reward is not None:  # the epoch's samples are the set; rewards become contributions or labels
            frames = gather_object([f for b in batches for f in set_reward.media_frames(b.media)])
            stats["dragon/set_value"] = set_reward.set_value(frames)
            if self.dragon.set_selection == "greedy":
                size = min(len(frames) - 1, max(2, round(self.dragon.greedy_fraction * len(frames))))
                labels = greedy_positive_set(set_reward.set_value, frames, size)
            else:
                rewards = leave_one_out_contributions(set_reward.set_value, frames).float()
        if self.loss_kind == "dpo":
            pairs = paired_demonstrations(rewards, ids)
            rows = [list(p) for p in pairs]  # one unit: a winner and its loser
        else:
            labels = unpaired_demonstrations(rewards) if labels is None else labels
            rows = [[i] for i in torch.nonzero(labels).flatten().tolist()]
        if set_reward is not None and labels is not None:
            plus, minus = (torch.nonzero(labels == v).flatten().tolist() for v in (1, -1))
            for name, members in (("plus", plus), ("minus", minus)):
                if len(members) > 1:  # a set reward of fewer than two samples is not defined
                    stats[f"dragon/set_value_{name}"] = set_reward.set_value([frames[i] for i in members])
        stats["dragon/demonstrations"] = float(len(rows))
        if rows and self.loss_kind == "dpo":
            stats["dragon/reward_gap"] = float(torch.stack([rewards[w] - rewards[l] for w, l in rows]).mean())
        # every process trains as many rows, so as many batches (the same collectives); the rows that do not
        # divide among the processes are dropped
        per_batch = max(1, self.sample.batch_size // len(rows[0])) if rows else 1
        per_process = len(rows) // acc.num_processes
        mine = rows[acc.process_index * per_process:(acc.process_index + 1) * per_process]
        units = []
        for start in range(0, len(mine), per_batch):
            chunk = mine[start:start + per_batch]
            # paired: winners first, then their losers (the same order), so row k and k + n are one pair
            order = [r[0] for r in chunk] + ([r[1] for r in chunk] if self.loss_kind == "dpo" else [])
            units.append(self._batch(trainer, x0[order], [ids[i] for i in order],
                                     None if labels is None else labels[order], (self.cfg.seed, epoch, start,
                                                                                 acc.process_index), batches[0].sigmas))
        return units, stats

    def _batch(self, trainer, x0: torch.Tensor, prompt_ids: list[int], labels: torch.Tensor | None, seed_key: tuple,
               sigmas: torch.Tensor) -> RolloutBatch:
        data = trainer.train_set
        prompts = [data.prompts[i] for i in prompt_ids]
        metadata = [data.metadata[i] for i in prompt_ids]
        adapter = trainer.adapter
        with torch.no_grad():  # the conditional model: the loss is the velocity error without CFG
            cond = adapter.encode(prompts, guidance_scale=conditional_guidance(adapter),
                                  conditions=conditions_from_metadata(adapter, metadata))
        trajectory = Trajectory.of_latents(x0, self.sample.solver)
        keep = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
        batch = RolloutBatch(torch.tensor(prompt_ids, device=x0.device), prompts, metadata, cond, sigmas, trajectory,
                             keep=keep, extras={"seed_key": seed_key})
        if labels is not None:
            batch.extras["labels"] = labels.to(x0.device)
        return batch

    def loss(self, ctx: LossContext, batch: RolloutBatch, position: int) -> tuple[torch.Tensor, dict[str, float]]:
        x0 = batch.trajectory.final.float()
        pairs = self.loss_kind == "dpo"
        n = x0.shape[0] // 2 if pairs else x0.shape[0]
        g = torch.Generator().manual_seed(derived_seed(*batch.extras["seed_key"], "dragon"))
        # one time and one noise per pair (or sample), shared by the winner, the loser, the policy and the reference
        index = torch.randint(0, self.sample.num_steps, (n,), generator=g)
        noise = torch.randn((n, *x0.shape[1:]), generator=g).to(x0.device)
        if pairs:
            index, noise = index.repeat(2), noise.repeat(2, *[1] * (x0.ndim - 1))
        t = batch.sigmas[index.to(batch.sigmas.device)].to(x0.device)
        x_t = ctx.adapter.add_noise(x0, noise, t)
        guidance = conditional_guidance(ctx.adapter)
        err = velocity_error(ctx.adapter.velocity(x_t, t, batch.cond, guidance_scale=guidance, model=ctx.model), x0,
                             noise)
        with torch.no_grad(), ctx.reference.active() as reference:
            ref = velocity_error(ctx.adapter.velocity(x_t, t, batch.cond, guidance_scale=guidance, model=reference), x0,
                                 noise)
        b = self.dragon.beta
        if pairs:
            per = dpo_loss(err[:n], ref[:n], err[n:], ref[n:], b)
            metrics = {"dpo_loss": per.mean().item(),
                       "implicit_accuracy": ((err[:n] - ref[:n]) < (err[n:] - ref[n:])).float().mean().item()}
        else:
            per = kto_loss(err, ref, batch.extras["labels"], b, self.dragon.kto_z0)
            metrics = {"kto_loss": per.mean().item()}
        metrics["error_delta"] = (err - ref).mean().item()
        return per.mean(), metrics
