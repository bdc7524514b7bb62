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
