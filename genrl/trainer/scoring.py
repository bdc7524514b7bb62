"""The reward service: the training reward and the evaluation rewards built from one pool, checked against
what the model family generates, and the epoch's rewards gathered into advantages."""

from __future__ import annotations

import torch
from accelerate import Accelerator

from genrl.algorithms import Algorithm, RolloutBatch
from genrl.config import ConfigError, ExperimentConfig, reward_terms
from genrl.models.from_config import config_check
from rewards import WeightedSum
from rewards.media import empty_tensor
from rewards.registry import RewardPool


class RewardService:
    """``reward_fn`` (the weighted sum of ``reward_terms``) and ``eval_rewards`` (metric -> reward); a metric
    with a training term's name and options shares its loaded model. ``config_key(kind, name)`` is where a
    reward came from in the config (``kind`` ``"train"`` or ``"eval"``), which its errors name."""

    def __init__(self, cfg: ExperimentConfig, accelerator: Accelerator) -> None:
        self.cfg, self.accelerator = cfg, accelerator
        r, pool = cfg.reward, RewardPool()
        terms = reward_terms(r)
        self.reward_fn = config_check(lambda: WeightedSum({label: pool.build(name, **options)
                                                           for label, name, _, options, _ in terms},
                                                          weights={label: w for label, _, w, _, _ in terms}),
                                      "reward.train" if r.train else "reward.weights")
        self._keys = {("train", label): key for label, _, _, _, key in terms}
        self.eval_rewards = {metric: pool.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
                             for metric, spec in r.eval.items()}
        self._keys.update({("eval", metric): f"reward.eval.{metric}" for metric in r.eval})

    def config_key(self, kind: str, name: str) -> str:
        return self._keys[(kind, name)]

    def check(self, adapter, algorithm: Algorithm) -> None:
        """Every training and evaluation reward scores what the model family generates, and the training reward
        is differentiable when the algorithm backpropagates it (a :class:`ConfigError` naming the config key)."""
        if algorithm.needs_differentiable_reward:
            flat = [(label, r) for label, r in self.reward_fn.components.items() if not r.differentiable]
            if flat:
                label, reward = flat[0]
                raise ConfigError(f"{self.config_key('train', label)}: train.algorithm {self.cfg.train.algorithm!r} "
                                  f"backpropagates the reward, and reward {reward.name!r} is not differentiable")
        kind = adapter.media_kind
        # each reward's own check of what it is given (kind, audio rate), nested rewards included, on no samples
        probe = adapter.as_media(empty_tensor(kind))
        named = [(self.config_key("train", label), r) for label, r in self.reward_fn.components.items()]
        named += [(self.config_key("eval", metric), r) for metric, r in self.eval_rewards.items()]
        for key, reward in named:
            try:
                reward.media_tensor(probe)
            except ValueError as err:
                raise ConfigError(f"{key}: {err} (model family {adapter.family!r} generates {kind})") from None

    def score_batch(self, batch: RolloutBatch) -> None:
        """The training reward of a batch right after it is decoded (its components kept for logging)."""
        out = self.reward_fn(batch.media, batch.prompts, batch.metadata)
        batch.rewards = out.scores.to(self.accelerator.device, torch.float32)
        batch.extras["reward_components"] = {name: out.info[name] for name in self.reward_fn.components}

    def score_epoch(self, batches: list[RolloutBatch], algorithm: Algorithm) -> dict[str, float]:
        """Gather the local samples' rewards with their prompt ids and set advantages per sample."""
        acc = self.accelerator
        components: dict[str, list[torch.Tensor]] = {}
        for batch in batches:  # each was scored when it was sampled
            for name, values in batch.extras["reward_components"].items():
                components.setdefault(name, []).append(values.to(acc.device, torch.float32))
        local = torch.cat([b.rewards for b in batches])
        all_rewards = acc.gather(local)
        all_ids = acc.gather(torch.cat([b.prompt_index for b in batches]))
        finite = torch.isfinite(all_rewards)
        if not finite.any():
            raise FloatingPointError("every reward of this epoch is NaN/inf; check the reward models "
                                     f"({sorted(self.reward_fn.components)}); no update was made")
        extra = algorithm.advantage_inputs(batches)  # e.g. TP-GRPO's per-step rewards, gathered like rewards
        if extra is None:
            adv = algorithm.compute_advantages(all_rewards.cpu(), all_ids.cpu().tolist())
        else:
            adv = algorithm.compute_advantages(all_rewards.cpu(), all_ids.cpu().tolist(),
                                               extra=acc.gather(extra.to(acc.device)).cpu())
        n = local.numel()
        start = acc.process_index * n
        mine_adv = adv.advantages[start:start + n].to(acc.device)
        mine_keep = adv.keep[start:start + n].to(acc.device)
        offset = 0
        for batch in batches:
            size = batch.rewards.numel()
            batch.advantages, batch.keep = mine_adv[offset:offset + size], mine_keep[offset:offset + size]
            offset += size
        metrics = {"reward/mean": all_rewards[finite].mean().item(), "reward/std": all_rewards[finite].std().item(),
                   "reward/nonfinite": adv.stats["nonfinite"], "zero_std_ratio": adv.stats["zero_std_ratio"],
                   "kept_fraction": adv.keep.float().mean().item()}
        for key in ("banned_prompts", "best_and_worst_kept"):
            if key in adv.stats:
                metrics[key] = adv.stats[key]
        for name, values in components.items():
            gathered = acc.gather(torch.cat(values))
            good = gathered[torch.isfinite(gathered)]
            if good.numel():
                metrics[f"reward/{name}/mean"] = good.mean().item()
                metrics[f"reward/{name}/std"] = good.std().item() if good.numel() > 1 else 0.0
        return metrics
