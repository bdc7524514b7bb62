"""A lightweight artifact classifier on frozen image features, and the reward built on it.

The detector is a token-wise MLP over the CLS and patch tokens of a frozen backbone (DINOv2, an
open_clip ViT or the toy CLIP tower; see :mod:`rewards.backbones`) whose per-token logits are pooled
by a log-mean-exp, so that an artifact in a few patches (a torn shape, a smear) can decide the
image; it is trained with binary cross-entropy on
labelled clean / artifact images (``scripts/train_artifact_detector.py``). A trained detector is a
directory holding ``artifact_detector.json`` (backbone, head size, validation metrics) and
``artifact_head.safetensors``. One ships for the toy world (``detector="toy"``, in ``rewards.toyworld``), trained on
renderer scenes with synthetic artifacts (:mod:`genrl.toy.artifacts`).

The reward is the probability that an image is clean, ``1 - P(artifact)``, as the artifact reward
of the robustness papers (``reference/reward-robustness.md``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .backbones import TokenBackbone, build_backbone
from .base import Reward, RewardOutput
from .registry import register_reward

DETECTOR_CONFIG = "artifact_detector.json"
DETECTOR_WEIGHTS = "artifact_head.safetensors"
LABEL_DIRS = {"clean": 0, "artifact": 1}


def toy_detector_dir() -> Path:
    """Where the shipped toy artifact detector lives."""
    from .toyworld import TOY_ARTIFACT_DETECTOR_DIR

    return TOY_ARTIFACT_DETECTOR_DIR


class ArtifactHead(nn.Module):
    """Per-token ``Linear -> GELU -> Linear`` on standardised tokens, pooled by log-mean-exp: the image's
    logit of "has an artifact" (a soft maximum, so a few artifact tokens are enough)."""

    def __init__(self, in_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, T, D)`` tokens -> ``(N,)`` logits."""
        z = self.net((tokens - self.feature_mean) / self.feature_std).squeeze(-1)
        return torch.logsumexp(z, dim=1) - math.log(z.shape[1])


@torch.no_grad()
def detector_features(backbone: TokenBackbone, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """CLS and patch tokens ``(N, 1 + P, D)`` of float images ``(N, 3, H, W)`` in [0, 1]."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        cls, patches = backbone(images[start:start + batch_size])
        out.append(torch.cat([cls[:, None], patches], dim=1))
    return torch.cat(out)


def binary_metrics(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of boolean predictions against 0/1 labels (positive = artifact)."""
    predicted, labels = predicted.bool(), labels.bool()
    tp = (predicted & labels).sum().item()
    fp = (predicted & ~labels).sum().item()
    fn = (~predicted & labels).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (predicted == labels).float().mean().item(), "precision": precision, "recall": recall,
            "f1": f1, "n": int(labels.numel())}


def train_artifact_head(train_tokens: torch.Tensor, train_labels: torch.Tensor, hidden: int = 128,
                        steps: int = 600, batch_size: int = 1024, lr: float = 2e-3, weight_decay: float = 1e-2,
                        seed: int = 0) -> ArtifactHead:
    """Minibatch AdamW on binary cross-entropy; the token statistics come from the training set."""
    if train_tokens.shape[0] != train_labels.shape[0]:
        raise ValueError(f"{train_tokens.shape[0]} images' tokens but {train_labels.shape[0]} labels")
    if train_labels.unique().numel() < 2:
        raise ValueError("the training set needs both clean (0) and artifact (1) examples")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = ArtifactHead(train_tokens.shape[-1], hidden)
    flat = train_tokens.reshape(-1, train_tokens.shape[-1])
    head.feature_mean.copy_(flat.mean(0))
    head.feature_std.copy_(flat.std(0).clamp(min=1e-6))
    opt = torch.optim.AdamW(head.net.parameters(), lr=lr, weight_decay=weight_decay)
    target = train_labels.float()
    for _ in range(steps):
        idx = torch.randint(train_tokens.shape[0], (min(batch_size, train_tokens.shape[0]),), generator=gen)
        loss = F.binary_cross_entropy_with_logits(head(train_tokens[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval().requires_grad_(False)


def save_detector(out_dir: str | Path, backbone: str, head: ArtifactHead, metrics: dict) -> Path:
    """Write a detector directory (weights first, then the config that marks it complete)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / DETECTOR_WEIGHTS))
    config = {"backbone": backbone, "in_dim": head.net[0].in_features, "hidden": head.net[0].out_features,
              "metrics": metrics}
    tmp = out / (DETECTOR_CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / DETECTOR_CONFIG)
    return out


def load_detector(path: str | Path) -> tuple[dict, ArtifactHead]:
    """The config and head of a detector directory written by :func:`save_detector`."""
    path = Path(path)
    if not (path / DETECTOR_CONFIG).is_file():
        raise FileNotFoundError(f"no artifact detector at {path} ({DETECTOR_CONFIG} missing); train one with "
                                "scripts/train_artifact_detector.py")
    config = json.loads((path / DETECTOR_CONFIG).read_text(encoding="utf-8"))
    head = ArtifactHead(int(config["in_dim"]), int(config["hidden"]))
    head.load_state_dict(load_file(str(path / DETECTOR_WEIGHTS)))
    return config, head.eval().requires_grad_(False)


def load_labelled_folder(root: str | Path, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images under ``root/clean`` and ``root/artifact`` as float ``(N, 3, H, W)`` in [0, 1] and 0/1 labels."""
    from PIL import Image

    from .references import IMAGE_SUFFIXES

    root = Path(root)
    images, labels = [], []
    for name, label in LABEL_DIRS.items():
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(f"{folder}: no images; a labelled folder needs clean/ and artifact/ subfolders")
        for path in files:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if image_size:
                    im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
                images.append(np.asarray(im))
            labels.append(label)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise ValueError(f"images under {root} differ in size {sorted(shapes)[:3]}; pass an image size to resize")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.tensor(labels)


@register_reward("artifact_classifier")
class ArtifactClassifierReward(Reward):
    """``P(clean) = 1 - sigmoid(logit)`` of a trained artifact detector (``detector``: a directory or ``"toy"``)."""

    def __init__(self, detector: str = "toy", device: str | torch.device = "cpu") -> None:
        self.config_path = toy_detector_dir() if detector == "toy" else Path(detector).expanduser()
        self.config, head = load_detector(self.config_path)
        self.device = torch.device(device)
        self.backbone = build_backbone(self.config["backbone"]).to(self.device)
        self.head = head.to(self.device)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        p_artifact = torch.sigmoid(self.head(detector_features(self.backbone, images.to(self.device))))
        return RewardOutput((1 - p_artifact).float().cpu(), {"p_artifact": p_artifact.cpu().tolist()})
