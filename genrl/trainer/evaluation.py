"""The evaluation service: deterministic sampling of the held-out prompts with the EMA weights, scored by
every evaluation reward, reduced over processes and per prompt family, with the images of a sample grid."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from accelerate import Accelerator

from genrl.config import ExperimentConfig
from genrl.data import PromptDataset, prompt_family
from genrl.grid import edit_triples, scored_caption, spread_over_families
from rewards.media import Media

from .model_state import ModelState
from .rollouts import RolloutService
from .scoring import RewardService

GRID_IMAGES = 16  # evaluation images in each sample grid, spread over the prompt families


class Evaluator:
    """Runs :meth:`evaluate` on ``test_set``; ``before_batch`` runs before every batch (stop signals)."""

    def __init__(self, cfg: ExperimentConfig, accelerator: Accelerator, models: ModelState, rewards: RewardService,
                 rollouts: RolloutService, test_set: PromptDataset,
                 before_batch: Callable[[], None] = lambda: None) -> None:
        self.cfg, self.accelerator, self.models, self.rewards = cfg, accelerator, models, rewards
        self.rollouts, self.test_set, self.before_batch = rollouts, test_set, before_batch

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], Media | None, list[str]]:
        """Deterministic (ODE) sampling of the test prompts at ``eval_num_steps`` with the EMA weights, the
        evaluation guidance scale and solver (``sample.eval_guidance_scale``, ``sample.eval_solver``; the
        training ones when unset).

        Returns the metrics (means over all processes) and, for a sample grid, up to ``GRID_IMAGES``
        of this process's samples (stored media; None when it has none), of prompts spread over the prompt
        families, with their captions (the prompt and each evaluation reward's verdict on the sample).
        """
        cfg, acc, models = self.cfg, self.accelerator, self.models
        eval_rewards = self.rewards.eval_rewards
        n = cfg.sample.eval_images_per_prompt
        every_job = [(i, r) for i in range(len(self.test_set)) for r in range(n)]
        jobs = every_job[acc.process_index::acc.num_processes]
        batch = cfg.sample.eval_batch_size
        # a sharded denoiser's forwards are collectives: every process runs as many batches as the busiest one
        longest = -(-len(every_job) // acc.num_processes) if models.sharded else len(jobs)
        guidance = cfg.sample.eval_guidance_scale  # None: the adapter's, sample.guidance_scale
        solver = cfg.sample.eval_solver or cfg.sample.solver
        sigmas = models.adapter.schedule(cfg.sample.eval_num_steps).to(acc.device)
        scores: dict[str, list[torch.Tensor]] = {k: [] for k in eval_rewards}
        families = [prompt_family(m) for m in self.test_set.metadata]
        family_names = sorted({f for f in families if f is not None})
        position = {name: k for k, name in enumerate(family_names)}
        family_index = torch.tensor([position.get(families[i], -1) for i, _ in jobs], dtype=torch.long,
                                    device=acc.device)
        grid = grid_positions(jobs, families)
        in_grid, kept = set(grid), {}
        models.model.eval()
        with models.ema_weights():
            for start in range(0, longest, batch):
                self.before_batch()
                chunk = jobs[start:start + batch]
                filler = not chunk  # only in lockstep: a batch whose images are discarded
                chunk = chunk or every_job[:1]
                prompts = [self.test_set.prompts[i] for i, _ in chunk]
                metadata = [self.test_set.metadata[i] for i, _ in chunk]
                with acc.autocast():  # the deterministic sampler; negative prompts if the scale uses CFG
                    media = self.rollouts.generate(prompts, metadata, [i for i, _ in chunk], "data.test_prompts",
                                                   sigmas=sigmas, model=models.unwrapped, guidance_scale=guidance,
                                                   ode_solver=solver, noise_generators=self.rollouts.generators(
                                                       *[(cfg.seed, "eval", i, r) for i, r in chunk])).media
                if filler:
                    continue
                for metric, reward in eval_rewards.items():
                    scores[metric].append(reward(media, prompts, metadata).scores.to(acc.device, torch.float32))
                kept.update({start + k: _grid_sample(media.select(slice(k, k + 1)).stored(), metadata[k])
                             for k in range(len(chunk)) if start + k in in_grid})
        mine = {metric: torch.cat(values).cpu() for metric, values in scores.items() if values}
        captions = [scored_caption(self.test_set.prompts[jobs[p][0]], {m: float(v[p]) for m, v in mine.items()})
                    for p in grid]
        metrics = {}
        for metric, values in scores.items():  # processes hold unequal shares: reduce sums and counts
            local = torch.cat(values) if values else torch.zeros(0, device=acc.device)
            good = torch.isfinite(local)
            totals = acc.reduce(torch.stack([local[good].sum(), good.sum().float(), (~good).sum().float()]), "sum")
            metrics[f"eval/{metric}"] = (totals[0] / totals[1].clamp(min=1)).item()
            if totals[2] > 0:
                metrics[f"eval/{metric}/nonfinite"] = totals[2].item()
                warnings.warn(f"evaluation reward {metric!r} was non-finite for {int(totals[2])} images; "
                              "they are left out of its mean", RuntimeWarning, stacklevel=2)
            if family_names:
                metrics.update(self._family_means(metric, local, family_index, family_names))
        return metrics, Media.cat([kept[p] for p in grid]) if grid else None, captions

    def _family_means(self, metric: str, local: torch.Tensor, family_index: torch.Tensor,
                      names: list[str]) -> dict[str, float]:
        """Per-family means of one evaluation reward and their mean, GenEval's overall score."""
        n = len(names)
        keep = torch.isfinite(local) & (family_index >= 0)
        sums = torch.zeros(n, device=local.device).index_add_(0, family_index[keep], local[keep])
        counts = torch.zeros(n, device=local.device).index_add_(0, family_index[keep], torch.ones_like(local[keep]))
        sums, counts = self.accelerator.reduce(torch.stack([sums, counts]), "sum")
        out = {f"eval/{metric}/{name}": (sums[k] / counts[k]).item() for k, name in enumerate(names) if counts[k] > 0}
        if out:
            out[f"eval/{metric}/family_mean"] = float(np.mean(list(out.values())))
        return out


def grid_positions(jobs: list[tuple[int, int]], families: list[str | None]) -> list[int]:
    """Positions in ``jobs`` ((prompt, seed) pairs) of the images a sample grid shows: the first image of
    up to ``GRID_IMAGES`` prompts, spread over the prompt families."""
    first: dict[int, int] = {}
    for position, (prompt, _) in enumerate(jobs):
        first.setdefault(prompt, position)
    candidates = list(first.values())
    picked = spread_over_families([families[jobs[p][0]] for p in candidates], GRID_IMAGES)
    return [candidates[k] for k in picked]


def _grid_sample(media: Media, metadata: dict) -> Media:
    """An image edit (a prompt with a source ``image``) as its ``source | edit | target`` strip (a multi-image
    edit shows its first source); anything else as is."""
    if media.kind != "image" or "image" not in metadata:
        return media
    from rewards.motion_alignment import image_from_metadata

    first = lambda value: value[0] if isinstance(value, (list, tuple)) else value
    as_hwc = lambda key: image_from_metadata(first(metadata[key]), key, 0).permute(1, 2, 0).numpy()
    edit = media.as_float().tensor.permute(0, 2, 3, 1).cpu().numpy()
    strip = edit_triples(edit, [as_hwc("image")], [as_hwc("target") if "target" in metadata else None])
    return Media(torch.from_numpy(strip).permute(0, 3, 1, 2), kind="image").stored()
