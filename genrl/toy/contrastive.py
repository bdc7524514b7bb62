"""What the toy worlds' contrastive reward models (the toy CLIP, the toy CLAP) share: their training settings and
optimiser."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ContrastiveTrainConfig:
    """Settings of a contrastive training run; each model's config sets its own ``steps``, ``batch_size`` and
    ``out_dir`` defaults."""

    seed: int = 0
    threads: int = 2
    steps: int = 1000
    batch_size: int = 64  # distinct prompts per batch (duplicates would be false negatives)
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1

    def __post_init__(self) -> None:
        for name in ("threads", "steps", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")


def contrastive_optimizer(model: torch.nn.Module, cfg: ContrastiveTrainConfig
                          ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a linear warm-up over ``cfg.warmup_steps`` and a linear decay to 5 % at ``cfg.steps``."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * max(0.05, 1 - s / cfg.steps))
    return opt, sched
