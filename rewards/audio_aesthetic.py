"""An aesthetics-style predictor for audio, DRAGON's instance-wise reward: a small MLP on a clip's chunk-averaged
CLAP embedding, fitted to ratings of clips (``scripts/train_audio_aesthetic.py``).

DRAGON's predictor is trained on human 1-5 ratings of mostly generated music and reads chunk-averaged audio
embeddings; this is that model class for any CLAP and any ratings. A predictor is a folder:

- ``config.json``: the CLAP it reads (``clap_model``, ``clap_backend``), the fadtk windows (``window_s``,
  ``hop_s``), the head's ``hidden`` sizes, and what it was fitted on (``ratings``, held-out figures);
- ``model.safetensors``: the head's weights.

The embedding is the unit-normalised mean of the unit CLAP embeddings of the clip's windows
(:class:`rewards.audio_frames.ClapFrames`, the frames per-song FAD uses).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .audio_frames import ClapFrames
from .base import Reward, RewardOutput
from .registry import register_reward

PREDICTOR_CONFIG = "config.json"
PREDICTOR_WEIGHTS = "model.safetensors"


class RatingHead(nn.Module):
    """``in_features -> hidden... -> 1`` with GELU between the linear layers."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        sizes = [int(in_features), *(int(h) for h in hidden)]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.GELU()]
        self.layers = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds).squeeze(-1)


def chunk_averaged_embeddings(frames: ClapFrames, waveforms: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` float32: the unit-normalised mean of each ``(N, T)`` clip's CLAP window embeddings."""
    return F.normalize(torch.stack([f.mean(0) for f in frames.frames(waveforms)]).float(), dim=-1)


def save_predictor(folder: str | os.PathLike, head: RatingHead, config: dict[str, Any]) -> Path:
    """Write a predictor folder atomically: a sibling temporary folder, renamed into place (an existing
    predictor there is replaced only once the new one is complete)."""
    from safetensors.torch import save_file

    target = Path(folder).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(tmp / PREDICTOR_WEIGHTS))
        (tmp / PREDICTOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        # mkdtemp's folder is private (0700); the predictor gets the permissions any new folder would
        os.chmod(tmp, 0o777 & ~umask)
        for name in (PREDICTOR_WEIGHTS, PREDICTOR_CONFIG):
            os.chmod(tmp / name, 0o666 & ~umask)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_predictor(folder: str | os.PathLike) -> tuple[RatingHead, dict[str, Any]]:
    """The head (eval mode, frozen) and the config of a predictor folder."""
    from safetensors.torch import load_file

    root = Path(folder).expanduser()
    for name in (PREDICTOR_CONFIG, PREDICTOR_WEIGHTS):
        if not (root / name).is_file():
            raise FileNotFoundError(f"audio_aesthetic predictor {str(root)!r} lacks {name}; fit one with "
                                    "`python scripts/train_audio_aesthetic.py`")
    config = json.loads((root / PREDICTOR_CONFIG).read_text(encoding="utf-8"))
    missing = [k for k in ("clap_model", "embed_dim", "hidden", "window_s", "hop_s") if k not in config]
    if missing:
        raise ValueError(f"audio_aesthetic predictor {str(root)!r}: {PREDICTOR_CONFIG} lacks {missing}")
    head = RatingHead(config["embed_dim"], config["hidden"])
    try:
        head.load_state_dict(load_file(str(root / PREDICTOR_WEIGHTS)))
    except RuntimeError as err:
        raise ValueError(f"audio_aesthetic predictor {str(root)!r}: weights do not match its config "
                         f"(embed_dim {config['embed_dim']}, hidden {config['hidden']})") from err
    return head.eval().requires_grad_(False), config


@register_reward("audio_aesthetic")
class AudioAestheticReward(Reward):
    """``head(chunk-averaged CLAP embedding)`` of ``(N, T)`` waveforms at ``sample_rate``: the predicted rating.

    ``predictor`` is a folder written by ``scripts/train_audio_aesthetic.py`` (``toy``: the shipped toy predictor,
    fitted to the verifier's ratings of the toy audio generator's clips); the CLAP and the windows are the
    ones it was fitted with (from its config), ``clap_model=toy`` being the shipped toy CLAP.
    """

    modality = "audio"
    name = "audio_aesthetic"

    def __init__(self, predictor: str, sample_rate: int = 48_000, allow_pickle: bool = False,
                 device: str | torch.device = "cpu") -> None:
        if predictor == "toy":
            from rewards.toyaudio import TOY_AUDIO_AESTHETIC_DIR

            predictor = str(TOY_AUDIO_AESTHETIC_DIR)
        self.head, self.config = load_predictor(predictor)
        self.device, self.sample_rate = torch.device(device), int(sample_rate)
        self.head.to(self.device)
        self.frames = ClapFrames(self.sample_rate, window_s=float(self.config["window_s"]),
                                 hop_s=float(self.config["hop_s"]), model=self.config["clap_model"],
                                 backend=self.config.get("clap_backend", "transformers"), allow_pickle=allow_pickle,
                                 device=device)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        embeds = chunk_averaged_embeddings(self.frames, images)
        if embeds.shape[1] != self.config["embed_dim"]:
            raise ValueError(f"audio_aesthetic: the CLAP gives {embeds.shape[1]}-dimensional embeddings, the "
                             f"predictor reads {self.config['embed_dim']}")
        return RewardOutput(self.head(embeds.to(self.device)).float().cpu())


def fit_rating_head(embeds: torch.Tensor, ratings: torch.Tensor, train_index: Sequence[int],
                    val_index: Sequence[int], *, hidden: Sequence[int] = (64,), steps: int = 2000, lr: float = 1e-3,
                    weight_decay: float = 1e-2, seed: int = 0) -> tuple[RatingHead, dict[str, float]]:
    """Fit a :class:`RatingHead` to ``ratings`` of ``embeds`` by full-batch AdamW on the mean squared error over
    ``train_index``, keeping the weights with the lowest error on ``val_index`` (checked every 10 steps).

    Returns the head and its figures: train and held-out MSE, held-out Pearson and Spearman correlations, the step
    kept, and
    the held-out MSE of always predicting the training mean (the floor a useful predictor beats)."""
    from scipy.stats import pearsonr, spearmanr

    embeds, ratings = embeds.float(), ratings.float()
    if embeds.ndim != 2 or ratings.shape != (embeds.shape[0],):
        raise ValueError(f"expected (N, d) embeddings and (N,) ratings, got {tuple(embeds.shape)} and "
                         f"{tuple(ratings.shape)}")
    if not torch.isfinite(ratings).all():
        raise ValueError(f"ratings hold non-finite values at {torch.nonzero(~torch.isfinite(ratings)).flatten().tolist()[:5]}")
    train, val = torch.as_tensor(list(train_index)), torch.as_tensor(list(val_index))
    if len(train) < 2 or len(val) < 2 or set(train.tolist()) & set(val.tolist()):
        raise ValueError(f"need at least 2 training and 2 held-out clips, disjoint; got {len(train)} and {len(val)}")
    torch.manual_seed(seed)
    head = RatingHead(embeds.shape[1], hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    best = (float("inf"), 0, {k: v.clone() for k, v in head.state_dict().items()})
    for step in range(1, steps + 1):
        loss = F.mse_loss(head(embeds[train]), ratings[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps:
            with torch.no_grad():
                val_mse = F.mse_loss(head(embeds[val]), ratings[val]).item()
            if val_mse < best[0]:
                best = (val_mse, step, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    head.eval().requires_grad_(False)
    with torch.no_grad():
        predicted = head(embeds[val])
        figures = {"train_mse": F.mse_loss(head(embeds[train]), ratings[train]).item(), "val_mse": best[0],
                   "val_mse_of_mean": F.mse_loss(torch.full_like(ratings[val], ratings[train].mean().item()),
                                                 ratings[val]).item(),
                   "val_pearson": float(pearsonr(predicted.numpy(), ratings[val].numpy()).statistic),
                   "val_spearman": float(spearmanr(predicted.numpy(), ratings[val].numpy()).statistic),
                   "best_step": best[1], "train_clips": len(train), "val_clips": len(val)}
    return head, figures
