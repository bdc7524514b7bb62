"""Group-relative advantages (GRPO) with the safeguards Flow-GRPO's stat tracker applies."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Advantages:
    """Per-sample advantages and which samples may train.

    ``keep`` is False for samples with a non-finite reward and for samples of zero-std groups of
    two or more (identical rewards, advantage exactly 0: no signal). ``stats`` holds counts for logging.
    """

    advantages: torch.Tensor
    keep: torch.Tensor
    stats: dict[str, float]


def group_advantages(rewards: torch.Tensor, group_ids: Sequence[Hashable], *, global_std: bool = True,
                     eps: float = 1e-4, clip: float = 5.0) -> Advantages:
    """``A_i = (R_i - mean_group(R)) / (std + eps)``, clipped to ``[-clip, clip]``.

    ``std`` is the std over all finite rewards when ``global_std`` (Flow-GRPO's SD3 default),
    otherwise the group's own std (population std, as numpy's default in the reference).
    Non-finite rewards are excluded from every statistic and get advantage 0 and ``keep=False``.

    A group with a single sample has nothing to compare within it; it gets the batch-level z-score
    ``(R_i - mean(R)) / (std(R) + eps)`` over all finite rewards, as the reference does without
    per-prompt tracking. This holds per group, so a batch can mix both kinds: with
    ``sample.group_size=1`` a prompt drawn twice in an epoch is a group of two (its samples share a
    prompt id) while the others stay single. ``stats["group_size_one"]`` is the share of such groups.

    A group's size counts all its samples, finite or not: a group of four with three non-finite
    rewards is not a single-sample group but one with nothing to compare, so its survivor is masked
    (``keep=False``, advantage 0) rather than given the batch z-score.
    """
    rewards = rewards.detach().to(torch.float64).flatten()
    if len(group_ids) != rewards.numel():
        raise ValueError(f"got {rewards.numel()} rewards but {len(group_ids)} group ids")
    finite = torch.isfinite(rewards)
    adv = torch.zeros_like(rewards)
    keep = finite.clone()
    if finite.sum() == 0:
        return Advantages(adv.float(), keep, {"nonfinite": float(rewards.numel()), "zero_std_ratio": 0.0,
                                              "num_groups": 0.0, "group_size_one": 0.0})
    batch_mean, batch_sd = rewards[finite].mean(), rewards[finite].std(unbiased=False)
    index: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        index.setdefault(g, []).append(i)
    zero_std_groups = single_groups = 0
    for members in index.values():
        if len(members) == 1:  # a group of one sample: compared with the batch
            single_groups += 1
            if finite[members[0]]:
                adv[members] = (rewards[members] - batch_mean) / (batch_sd + eps)
            continue
        idx = torch.tensor([i for i in members if finite[i]], dtype=torch.long)
        vals = rewards[idx]
        if len(idx) < 2:  # fewer than two finite rewards in a larger group: nothing to compare
            keep[idx] = False
        elif bool((vals == vals[0]).all()):  # identical rewards: advantage exactly 0, no signal
            zero_std_groups += 1
            keep[idx] = False
        else:
            sd = batch_sd if global_std else vals.std(unbiased=False)
            adv[idx] = (vals - vals.mean()) / (sd + eps)
    adv = adv.clamp(-clip, clip)
    stats = {"nonfinite": float((~finite).sum()), "num_groups": float(len(index)),
             "zero_std_ratio": zero_std_groups / len(index), "group_size_one": single_groups / len(index)}
    return Advantages(adv.float(), keep, stats)


def per_reward_advantages(components: torch.Tensor, weights: Sequence[float], group_ids: Sequence[Hashable], *,
                          global_std: bool = True, eps: float = 1e-4, clip: float = 5.0) -> Advantages:
    """PISCES's GRPO advantages: each reward's own group advantage (:func:`group_advantages`, clipped), summed
    with the rewards' weights. ``components`` is ``(N, K)``, one column per reward in the order of ``weights``.

    A sample trains when every reward of it is finite and at least one reward's group carries signal (a group
    where one reward is constant still learns from the others)."""
    components = components.detach().to(torch.float64)
    if components.ndim != 2 or components.shape[1] != len(weights):
        raise ValueError(f"got reward components of shape {tuple(components.shape)} for {len(weights)} weights")
    parts = [group_advantages(components[:, k], group_ids, global_std=global_std, eps=eps, clip=clip)
             for k in range(components.shape[1])]
    finite = torch.isfinite(components).all(1)
    advantages = sum(w * p.advantages.double() for w, p in zip(weights, parts, strict=True))
    keep = finite & torch.stack([p.keep for p in parts]).any(0)
    groups: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    silent = sum(1 for members in groups.values() if len(members) > 1 and not keep[members].any())
    stats = {"nonfinite": float((~finite).sum()), "num_groups": float(len(groups)),
             "zero_std_ratio": silent / len(groups), "group_size_one": parts[0].stats["group_size_one"]}
    return Advantages(torch.where(keep, advantages, 0.0).float(), keep, stats)


def best_and_worst(rewards: torch.Tensor, group_ids: Sequence[Hashable], count: int) -> torch.Tensor:
    """The mask of each group's ``count // 2`` highest and ``count // 2`` lowest finite rewards (DanceGRPO's and
    PISCES's ``bestofn`` subsampling); a group of at most ``count`` finite samples is kept whole."""
    if count < 2 or count % 2:
        raise ValueError(f"the best-and-worst subset needs an even count of at least 2, got {count}")
    rewards = rewards.detach().flatten()
    chosen = torch.zeros(rewards.numel(), dtype=torch.bool)
    groups: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    for members in groups.values():
        finite = [i for i in members if torch.isfinite(rewards[i])]
        ranked = sorted(finite, key=lambda i: float(rewards[i]))
        picked = ranked if len(ranked) <= count else ranked[:count // 2] + ranked[-(count // 2):]
        chosen[picked] = True
    return chosen
